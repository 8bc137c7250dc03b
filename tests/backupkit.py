"""Plain-data archives for the backup self-tests (no cluster): build, tamper, run the CLI;
and a fake API server on a loopback port the test opens itself."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fleetcheck.backup import archive as archive_mod
from fleetcheck.backup import export, secrets, signing
from fleetcheck.backup.kinds import Kind

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "backup"
PLANTED = "s3cr3t-planted-value-0xC0FFEE"
#: the key the self-tests sign archives with (generated per test session, never written)
SIGNER = signing.Signer.generate()
#: verification that trusts exactly SIGNER
TRUST = signing.Trust.of_key(SIGNER.public_key)

CM = Kind("configmaps", "", "v1", "configmaps", "ConfigMap", True)
SECRET = Kind("secrets", "", "v1", "secrets", "Secret", True)
NS = Kind("namespaces", "", "v1", "namespaces", "Namespace", False)
DEPLOY = Kind("deployments.apps", "apps", "v1", "deployments", "Deployment", True)


def live_objects(namespace: str = "shop") -> dict[Kind, list[dict[str, Any]]]:
    """What a list call would return (server-set fields included)."""
    server = {"uid": "u-1", "resourceVersion": "42", "creationTimestamp": "2024-01-01T00:00:00Z",
              "managedFields": [{"manager": "kubectl"}]}
    return {
        NS: [{"metadata": {"name": namespace, **server,
                           "labels": {"kubernetes.io/metadata.name": namespace, "team": "a"}},
              "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}],
        CM: [{"metadata": {"name": f"cm-{i}", "namespace": namespace, **server},
              "data": {"k": str(i)}} for i in range(3)]
            + [{"metadata": {"name": "kube-root-ca.crt", "namespace": namespace}, "data": {}}],
        SECRET: [{"metadata": {"name": "db", "namespace": namespace, **server,
                               "annotations": {
                                   "kubectl.kubernetes.io/last-applied-configuration":
                                       f'{{"stringData":{{"password":"{PLANTED}"}}}}'}},
                  "type": "Opaque",
                  "data": {"password": base64.b64encode(PLANTED.encode()).decode(),
                           "user": base64.b64encode(b"app").decode()}}],
        DEPLOY: [{"metadata": {"name": "web", "namespace": namespace, **server,
                               "annotations": {"deployment.kubernetes.io/revision": "3"}},
                  "spec": {"replicas": 2, "template": {"metadata": {"creationTimestamp": None},
                                                       "spec": {"containers": []}}},
                  "status": {"readyReplicas": 2}}],
    }


def make_exports(codec: secrets.SecretCodec, contexts: tuple[str, ...] = ("lab-a",),
                 namespace: str = "shop") -> list[export.ContextExport]:
    selection = export.Selection()
    out = []
    for ctx in contexts:
        exp = export.ContextExport(ctx, "https://example.invalid", "v1.34.4")
        for kind, items in live_objects(namespace).items():
            kexp = export.KindExport(kind, resource_versions=["42"])
            for item in items:
                export._add_item(kexp, item, kind, selection, codec, ctx)
            exp.kinds.append(kexp)
        out.append(exp)
    return out


def make_archive(path: Path, *, codec: secrets.SecretCodec | None = None,
                 contexts: tuple[str, ...] = ("lab-a",),
                 signer: signing.Signer | None = SIGNER) -> Path:
    """An archive of :func:`live_objects` per context, signed by ``signer`` (``None``:
    unsigned)."""
    codec = codec or secrets.SecretCodec.new(secrets.generate_key())
    written, _, _ = export.write_archive(make_exports(codec, contexts), path,
                                         export.Selection(), codec, signer=signer)
    return written


def rewrite_tar(src: Path, dst: Path, change: Any) -> Path:
    """Copy a tarball member by member; ``change(name, data)`` returns new bytes, ``None`` to
    drop the member; it may return a list of (name, data) to add members."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else b""
            result = change(member.name, data)
            if result is None:
                continue
            extra: list[tuple[str, bytes]] = []
            if isinstance(result, list):
                (data, extra) = (result[0][1], result[1:])
            else:
                data = result
            for name, blob in [(member.name, data), *extra]:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tout.addfile(info, io.BytesIO(blob))
    return dst


def public_key_file(directory: Path, signer: signing.Signer = SIGNER) -> Path:
    """``signer``'s public key as a PEM file in ``directory`` (for ``--public-key``)."""
    path = directory / f"signer-{signer.fingerprint[7:19]}.pub"
    if not path.exists():
        path.write_bytes(signing.public_pem(signer.public_key))
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, check=False)


# --- a fake API server (127.0.0.1, a port of the test's own) ----------------------------------

#: (method, path, query) -> (HTTP status, JSON body)
Answers = Callable[[str, str, dict[str, str]], tuple[int, Any]]
USER = "viewer"
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.4"}


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A Kubernetes ``Status`` answer."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
            **({"details": details} if details else {})}


def forbidden(verb: str, resource: str, namespace: str = "") -> dict[str, Any]:
    """The RBAC authorizer's 403, in its words."""
    where = (f'in the namespace "{namespace}"' if namespace else "at the cluster scope")
    return status(403, "Forbidden", f'{resource} is forbidden: User "{USER}" cannot {verb} '
                                    f'resource "{resource}" in API group "" {where}')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append((self.command, url.path, query))  # type: ignore[attr-defined]
        code, body = self.server.answers(self.command, url.path, query)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@contextlib.contextmanager
def fake_api(answers: Answers) -> Iterator[ThreadingHTTPServer]:
    """A fake API server answering with ``answers`` (``server.requests``: what it was asked;
    ``server.url``: its address)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.answers = answers  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- damage and forgery (the archive and signing tests, and the lab's integrity test) ---------

CM_FILE = "contexts/lab-a/configmaps.json"


def flip(name: str, data: bytes) -> bytes:
    if name.endswith(CM_FILE):
        index = data.index(b'"k"')
        return data[:index] + b"'" + data[index + 1:]
    return data


def damage(kind: str, good: Path, out: Path) -> Path:
    if kind == "byte flipped":
        return rewrite_tar(good, out, flip)
    if kind == "file removed":
        return rewrite_tar(good, out, lambda n, d: None if n.endswith(CM_FILE) else d)
    if kind == "file added":
        return rewrite_tar(good, out, lambda n, d: [(n, d), (n.rsplit("/", 1)[0] + "/contexts/lab-a/extra.json",
                                                           b"{}")] if n.endswith("SHA256SUMS")
                           else d)
    if kind == "truncated":
        raw = gzip.decompress(good.read_bytes())
        out.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
        return out
    if kind == "metadata count edited":
        def edit(name: str, data: bytes) -> bytes:
            if name.endswith("/metadata.json"):
                meta = json.loads(data)
                meta["contexts"]["lab-a"]["kinds"]["configmaps"]["count"] = 4
                return archive_mod.dump_document(meta)
            return data
        return rewrite_tar(good, out, edit)
    raise AssertionError(kind)


DAMAGE = {
    "byte flipped": (CM_FILE, "SHA-256 mismatch"),
    "file removed": (CM_FILE, "missing from the archive"),
    "file added": ("contexts/lab-a/extra.json", "not listed in SHA256SUMS"),
    "truncated": (None, "truncated"),
    "metadata count edited": ("metadata.json", "SHA-256 mismatch"),
}


def forge(src: Path, dst: Path, *, signer: signing.Signer | None = None,
          keep_signature: bool = True, drop_metadata_signer: bool = False) -> Path:
    """What someone who can rewrite the archive does: edit an object, fix SHA256SUMS (and
    metadata.json), then keep the old signature, drop it, or re-sign with their own key."""
    new: dict[str, bytes] = {}

    def edit(name: str, data: bytes) -> bytes | None:
        rel = name.partition("/")[2]
        if rel == CM_FILE:
            doc = json.loads(data)
            doc["items"][0]["data"]["k"] = "forged"
            new[rel] = archive_mod.dump_document(doc)
            return new[rel]
        if rel == "metadata.json" and (drop_metadata_signer or signer is not None):
            meta = json.loads(data)
            meta["signature"] = signer.describe() if signer is not None else None
            new[rel] = archive_mod.dump_document(meta)
            return new[rel]
        if rel == "SHA256SUMS":
            lines = []
            for line in data.decode().splitlines():
                digest, path = line.split("  ", 1)
                if path in new:
                    digest = hashlib.sha256(new[path]).hexdigest()
                lines.append(f"{digest}  {path}")
            new[rel] = ("\n".join(lines) + "\n").encode()
            return new[rel]
        if rel == "SHA256SUMS.sig":
            if signer is not None:
                return signer.sign(new["SHA256SUMS"])
            return data if keep_signature else None
        return data

    return rewrite_tar(src, dst, edit)
