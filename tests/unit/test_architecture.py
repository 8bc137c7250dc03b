"""The package's architecture, enforced: no import circle, every layer imports only the layers
below it, no domain imports another, the run's model imports no pytest, and a check file in
``suites/`` imports only ``fleetcheck`` and its domain (docs/architecture.md draws the picture).

Imports are read with :mod:`ast` (every ``import``, also inside functions and under
``TYPE_CHECKING``: a tie is a tie), never by importing the modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fixtures" / "fleetcheck"
SUITES = REPO / "suites"

#: the layers, lowest first; a module may import its own layer's package and the layers below
LAYERS: dict[str, int] = {
    "core": 0,
    "kube": 1,
    "run": 2,
    "mesh": 3, "federation": 3, "failover": 3, "drift": 3, "rbac": 3, "backup": 3,
    "report": 4,
    "plugin": 5,
    "cli": 6,
}
DOMAINS = {name for name, level in LAYERS.items() if level == 3}
#: what the public ``fleetcheck`` package itself may import: the names a check author uses
TOP_MAY_IMPORT = {"core", "kube", "run"}
#: packages that hold the run's model: usable without pytest (a console tool, a Job)
NO_PYTEST = {"core", "kube", "run"}
#: the domain packages each suite may import besides ``fleetcheck``: connectivity and DNS have
#: no domain of their own, their traffic patterns and echo server are cluster plumbing (kube),
#: which the mesh and failover checks measure with too; the failover suite's checks are of two
#: domains (node drain, and Karmada's cluster failover)
SUITE_DOMAINS: dict[str, set[str]] = {
    "test_backup": {"backup"},
    "test_connectivity": {"kube"},
    "test_consistency": {"drift"},
    "test_dns": {"kube"},
    "test_failover": {"failover", "federation", "kube"},
    "test_federation": {"federation"},
    "test_mesh": {"mesh", "kube"},
    "test_rbac": {"rbac"},
}


# --- reading imports -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Tie:
    """``source`` imports ``target`` (both module names) at ``line``."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for the package at ``root`` (``root.name`` is the package)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported(module: str, path: Path, known: Iterable[str]) -> list[Tie]:
    """The ties of ``module`` to modules in ``known`` (the longest known prefix of each name)."""
    known = set(known)
    root = next(iter(known)).split(".")[0] if known else ""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    ties = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path.name == "__init__.py", node)
            # ``from pkg import x`` runs pkg/__init__ first: a tie to pkg as well as to x
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.split(".")[0] == root:
                ties.append(Tie(module, name, node.lineno))
    return ties


def graph(root: Path) -> dict[str, list[Tie]]:
    found = modules(root)
    return {name: imported(name, path, found) for name, path in found.items()}


def cycles(ties: Mapping[str, list[Tie]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for tie in ties.get(node, []):
            if tie.target not in index:
                visit(tie.target)
                low[node] = min(low[node], low[tie.target])
            elif tie.target in on_stack:
                low[node] = min(low[node], index[tie.target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(ties):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> str | None:
    """``fleetcheck.kube.probes`` -> ``kube``; ``None`` for the top-level package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(ties: Mapping[str, list[Tie]]) -> list[str]:
    """Ties that go up a layer, across domains, or from the public package past the core."""
    out = []
    for source in sorted(ties):
        here = layer_of(source)
        for tie in ties[source]:
            there = layer_of(tie.target)
            if there is None:
                out.append(f"{tie}: imports the public package from inside it")
            elif here is None:
                if there not in TOP_MAY_IMPORT:
                    out.append(f"{tie}: the public package re-exports only {sorted(TOP_MAY_IMPORT)}")
            elif here not in LAYERS or there not in LAYERS:
                out.append(f"{tie}: {here if here not in LAYERS else there} is in no layer "
                           "(add it to LAYERS and docs/architecture.md)")
            elif here == there:
                continue
            elif LAYERS[there] > LAYERS[here]:
                out.append(f"{tie}: {here} (layer {LAYERS[here]}) imports {there} "
                           f"(layer {LAYERS[there]})")
            elif here in DOMAINS and there in DOMAINS:
                out.append(f"{tie}: domain {here} imports domain {there}")
    return out


def pytest_imports(root: Path, packages: set[str]) -> list[str]:
    """Modules of ``packages`` that import pytest (or _pytest)."""
    out = []
    for module, path in modules(root).items():
        if layer_of(module) not in packages:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("pytest", "_pytest") for n in names):
                out.append(f"{module} (line {node.lineno})")
    return out


def suite_imports(path: Path, allowed: set[str]) -> list[str]:
    """Imports of fleetcheck in a suite file other than ``fleetcheck`` and ``allowed`` domains."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            base = node.module or ""
            names = ([f"{base}.{a.name}" for a in node.names] if base == "fleetcheck"
                     else [base])
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "fleetcheck" or len(parts) == 1:
                continue
            if parts[1] in allowed or (base == "fleetcheck" and not (PACKAGE / parts[1]).exists()
                                       and not (PACKAGE / f"{parts[1]}.py").exists()):
                continue  # its domain, or a public name of fleetcheck
            out.append(f"{path.name} line {node.lineno}: {name}")
    return out


# --- the package as it is --------------------------------------------------------------------------

def test_no_import_circle() -> None:
    found = cycles(graph(PACKAGE))
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_and_domains() -> None:
    assert not violations(graph(PACKAGE)), "\n".join(violations(graph(PACKAGE)))


def test_every_package_is_placed_in_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), "add new packages to LAYERS and docs/architecture.md"
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not flat, f"modules outside any package: {flat}"


def test_the_runs_model_imports_no_pytest() -> None:
    assert not pytest_imports(PACKAGE, NO_PYTEST)


@pytest.mark.parametrize("suite", sorted(SUITE_DOMAINS))
def test_a_suite_imports_fleetcheck_and_its_domain_only(suite: str) -> None:
    assert not suite_imports(SUITES / f"{suite}.py", SUITE_DOMAINS[suite])


def test_every_suite_is_known() -> None:
    assert {p.stem for p in SUITES.glob("test_*.py")} == set(SUITE_DOMAINS)


def test_modules_over_500_lines_say_why() -> None:
    """No module over ~500 lines without a reason written in its docstring ("Size: ...")."""
    long = []
    for module, path in modules(PACKAGE).items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 550 and "Size:" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{module} ({text.count(chr(10))} lines)")
    assert not long, "split these, or say why in a 'Size:' paragraph of the docstring: " + \
        ", ".join(long)


def raw_requests(root: Path, allowed: set[str]) -> list[str]:
    """Calls of the ApiClient's request plumbing (``param_serialize``, ``call_api``) outside
    ``allowed`` modules: every raw request goes through one API layer."""
    out = []
    for module, path in modules(root).items():
        if module in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("param_serialize", "call_api")):
                out.append(f"{module} line {node.lineno}: {node.func.attr}")
    return out


#: kube.api makes the requests; core.targets' client subclass only adds default timeouts
RAW_REQUESTS_ALLOWED = {"fleetcheck.kube.api", "fleetcheck.core.targets"}


def test_every_raw_request_goes_through_the_api_layer() -> None:
    assert not raw_requests(PACKAGE, RAW_REQUESTS_ALLOWED)


# --- the checker can fail ----------------------------------------------------------------------------

def _tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "fleetcheck"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return root


def test_a_circle_is_found_also_through_a_function_level_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "core/a.py": "from fleetcheck.core.b import x\n",
        "core/b.py": "def f():\n    from . import a\n",
    })
    assert cycles(graph(root)) == [["fleetcheck.core.a", "fleetcheck.core.b"]]


def test_going_up_a_layer_and_across_domains_are_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "core/a.py": "from fleetcheck.plugin import hooks\n",
        "mesh/m.py": "from fleetcheck.federation.karmada import request\n",
        "federation/karmada.py": "from fleetcheck.kube import api\n",
        "plugin/hooks.py": "import fleetcheck.mesh.m\n",
        "kube/api.py": "",
    })
    found = violations(graph(root))
    assert any("core (layer 0) imports plugin (layer 5)" in v for v in found), found
    assert any("domain mesh imports domain federation" in v for v in found), found
    # plugin -> mesh and federation -> kube go down: fine
    assert {v.split(" ->")[0] for v in found} == {"fleetcheck.core.a", "fleetcheck.mesh.m"}, found


def test_a_raw_request_elsewhere_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "kube/api.py": "def request(c):\n    return c.call_api('GET', '/x')\n",
        "drift/read.py": "def get(c):\n    m = c.param_serialize(method='GET')\n",
    })
    assert raw_requests(root, {"fleetcheck.kube.api"}) == [
        "fleetcheck.drift.read line 2: param_serialize"]


def test_a_suite_importing_another_domain_is_found(tmp_path: Path) -> None:
    suite = tmp_path / "test_x.py"
    suite.write_text("from fleetcheck import Target, mesh\nfrom fleetcheck.kube.probes import P\n"
                     "from fleetcheck.rbac import api\n")
    found = suite_imports(suite, {"rbac"})
    assert found == ["test_x.py line 1: fleetcheck.mesh", "test_x.py line 2: fleetcheck.kube.probes"]
