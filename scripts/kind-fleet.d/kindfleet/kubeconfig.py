"""Merging the kubeconfigs kind exports (one per cluster) into the fleet's kubeconfig.

kind names everything of cluster ``fc-a`` ``kind-fc-a`` (cluster, user and context). The
merged kubeconfig has every cluster's entries; a name given twice with different content is
an error, never a silent overwrite.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

SECTIONS = ("clusters", "users", "contexts")


class MergeError(ValueError):
    """Two kubeconfigs define the same name differently, or one is malformed."""


def merge(docs: Sequence[Mapping[str, Any]], current_context: str | None = None
          ) -> dict[str, Any]:
    """One kubeconfig with the clusters, users and contexts of ``docs``, in order;
    ``current-context`` is ``current_context`` or the first document's."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                              "clusters": [], "users": [], "contexts": []}
    for index, doc in enumerate(docs):
        if doc.get("kind", "Config") != "Config":
            raise MergeError(f"kubeconfig {index}: kind {doc.get('kind')!r} is not Config")
        for section in SECTIONS:
            have = {e["name"]: e for e in merged[section]}
            for entry in doc.get(section) or []:
                name = entry.get("name")
                if not name:
                    raise MergeError(f"kubeconfig {index}: an entry of {section} has no name")
                if name in have:
                    if have[name] != entry:
                        raise MergeError(f"{section} entry {name!r} is defined twice, "
                                         "differently")
                    continue
                have[name] = entry
                merged[section].append(copy.deepcopy(dict(entry)))
    contexts = [c["name"] for c in merged["contexts"]]
    for context in merged["contexts"]:
        ref = context.get("context") or {}
        for section, key in (("clusters", "cluster"), ("users", "user")):
            if ref.get(key) not in {e["name"] for e in merged[section]}:
                raise MergeError(f"context {context['name']!r} names {key} {ref.get(key)!r}, "
                                 "which no kubeconfig defines")
    current = current_context or (docs[0].get("current-context") if docs else None)
    if current and current not in contexts:
        raise MergeError(f"current-context {current!r} is not among {contexts}")
    merged["current-context"] = current or ""
    return merged

