"""The layering of the code base, checked on the source (every import, deferred ones included):

- ``backend.core``: NumPy / SciPy / Higra maths, importing no other layer but ``backend.wire``;
- ``backend.wire``: the contract shared with the Blender add-on, standard library and NumPy only;
- ``backend.service``: ZeroMQ, never the method nor torch;
- no import cycle between the project's modules; no symlink in the repository.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "dataset_tools", "blender_addon")
STDLIB = set(sys.stdlib_module_names)


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of the file (deferred imports too)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            out.add(root)
            out.update(f"{root}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _resolve(imps: set[str], known: set[str]) -> set[str]:
    """Project modules imported: ``from pkg import module`` counts as ``pkg.module``, not as ``pkg``."""
    hit = {i for i in imps if i in known}
    return {i for i in hit if not any(j.startswith(i + ".") for j in hit)}


def project_modules() -> dict[str, set[str]]:
    mods = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            mods[module_name(path)] = imports_of(path)
    known = set(mods)
    return {m: _resolve(imps, known) - {m} for m, imps in mods.items()} | {
        f"__all__{m}": imps for m, imps in mods.items()}


def graph() -> dict[str, set[str]]:
    return {m: e for m, e in project_modules().items() if not m.startswith("__all__")}


def raw_imports(prefix: str) -> dict[str, set[str]]:
    return {m[7:]: e for m, e in project_modules().items() if m.startswith("__all__") and m[7:].startswith(prefix)}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_core_uses_only_numpy_scipy_higra_and_wire():
    allowed = {"numpy", "scipy", "higra"}
    for mod, imps in raw_imports("backend.core").items():
        bad = {i for i in imps if _top(i) not in STDLIB | allowed
               and not i.startswith(("backend.core", "backend.wire"))}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_wire_uses_only_the_standard_library_and_numpy():
    for mod, imps in raw_imports("backend.wire").items():
        bad = {i for i in imps if _top(i) not in STDLIB | {"numpy"} and not i.startswith("backend.wire")}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_service_never_imports_the_method_or_torch():
    for mod, imps in raw_imports("backend.service.").items():
        bad = {i for i in imps if i.startswith("backend.method") or _top(i) in {"torch", "open3d"}}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_the_add_on_talks_to_the_backend_only_through_the_wire():
    for mod, imps in raw_imports("blender_addon").items():
        bad = {i for i in imps if i.startswith("backend") and not i.startswith(("backend.wire", "backend.core.geometry"))}
        assert not bad, f"{mod} imports {sorted(bad)}"


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``g`` (as a closed path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_finds_a_deferred_cycle(tmp_path):
    """The cycle test can fail: two modules importing each other (one of them deferred) are found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    g = {"a": imports_of(tmp_path / "a.py", tmp_path) & {"b"}, "b": imports_of(tmp_path / "b.py", tmp_path) & {"a"}}
    assert find_cycle(g) == ["a", "b", "a"]


def test_importing_the_contract_and_the_service_loads_no_torch():
    code = ("import sys, backend.service.server, backend.service.client, backend.wire.protocol, "
            "backend.core.linkage_tree, backend.core.segment, backend.core.metrics; "
            "assert 'torch' not in sys.modules and 'open3d' not in sys.modules, 'torch/open3d imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_no_symlinks_in_the_repository():
    out = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not [line for line in out.splitlines() if line.startswith("120000")]
