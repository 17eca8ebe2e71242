"""The package layout docs/architecture.md describes, checked on the source itself.

Stages import only from earlier stages (datasets -> models -> models.api -> scoring -> ... -> cli), no
module-level import circle exists, no module reaches for another module's private names, and the
package root holds only the few shared modules every stage uses.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PKG = SRC / "omniseg"

# Earlier first; a module may import from its own stage and any stage above it in this list.
STAGES = [
    "shared",  # errors, clock, redaction, options, progress, registry
    "datasets",
    "models",  # local models and the Segmenter interface
    "models.api",  # the API layer and its providers
    "standins",  # the fake services shipped for the demo and the tests (import nothing from the pipeline)
    "scoring",
    "wiring",  # config and plugins: they know every registry
    "training",
    "store",
    "inference",
    "study",
    "cli",
]
SHARED = {"errors", "clock", "redaction", "options", "progress", "registry"}
WIRING = {"config", "plugins"}
# The one call against the grain, by design: a registry lookup of an unknown name loads the extensions,
# which register into that registry (docs/architecture.md, "Import rules").
EXCEPTIONS = {("omniseg.registry", "omniseg.plugins")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def stage(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts or parts[0] in SHARED or parts[0] in {"__init__", "__main__"}:
        return "cli" if parts[:1] == ["__main__"] else "shared"
    if parts[0] in WIRING:
        return "wiring"
    if parts[0] == "models" and parts[1:2] == ["api"]:
        return "models.api"
    return parts[0]


def imports(module: str, top_level_only: bool) -> set[str]:
    """The omniseg modules ``module`` imports (``from x import y`` counts y when y is a module)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != module}


def test_every_stage_imports_only_from_earlier_stages():
    wrong = []
    for module in MODULES:
        for target in imports(module, top_level_only=False):
            if (module, target) in EXCEPTIONS or target == "omniseg":
                continue
            if STAGES.index(stage(target)) > STAGES.index(stage(module)):
                wrong.append(f"{module} ({stage(module)}) imports {target} ({stage(target)})")
    assert not wrong, "imports against the pipeline's order:\n" + "\n".join(sorted(wrong))


def test_no_module_level_import_circle():
    graph = {m: imports(m, top_level_only=True) for m in MODULES}
    state: dict[str, int] = {}
    circles = []

    def visit(m, trail):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                circles.append(" -> ".join(trail[trail.index(t):] + [t]) if t in trail else f"{m} -> {t}")
            elif t not in state:
                visit(t, trail + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "module-level import circles:\n" + "\n".join(circles)


def test_no_module_imports_another_modules_private_names():
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("omniseg")):
                found += [f"{module}: from {'.' * node.level}{node.module or ''} import {a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "\n".join(found)


def test_the_package_root_holds_only_the_shared_modules_and_the_stages():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__"}
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert modules == SHARED | WIRING, modules ^ (SHARED | WIRING)
    assert len(modules) <= 8
    assert packages == {"cli", "datasets", "inference", "models", "scoring", "store", "study", "standins", "training"}
    # every stage says in its docstring what it holds and what it may import (docs/architecture.md)
    for name in packages:
        doc = ast.get_docstring(ast.parse((PKG / name / "__init__.py").read_text())) or ""
        assert "import" in doc.lower(), f"omniseg/{name}/__init__.py does not state its import rule"


def test_tests_mirror_the_source():
    """Each test module sits in the folder of the package it tests (tests/x/y/test_z.py for omniseg/x/y/)."""
    folders = {p.parent.relative_to(REPO / "tests") for p in (REPO / "tests").rglob("test_*.py")}
    packages = {p.parent.relative_to(PKG) for p in PKG.rglob("__init__.py")}
    assert folders <= packages | {Path(".")}, folders - packages
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test modules share a name (pytest imports them by name)"


SQL = __import__("re").compile(r"\b(SELECT\s|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+"
                               r"(TABLE|INDEX|VIEW)|ALTER\s+TABLE|DROP\s+TABLE|PRAGMA\s|json_extract\()")


def sql_in(path: Path) -> list[str]:
    """The string constants (f-strings' literal parts included) of a module that hold SQL."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.strip()[:60]!r}")
    return found


def test_no_sql_outside_the_store():
    found = [hit for p in sorted(PKG.rglob("*.py")) if not p.is_relative_to(PKG / "store") for hit in sql_in(p)]
    assert not found, "SQL belongs in src/omniseg/store/ (a named read or write there):\n" + "\n".join(found)


def test_the_sql_scan_sees_sql_where_it_is():
    assert all(sql_in(PKG / "store" / f"{m}.py") for m in ("archive", "bookings", "jobs", "results", "reviews", "runs",
                                                           "subsets"))
    assert not sql_in(PKG / "models" / "api" / "cached.py")


#: underscore names one may read on another object: namedtuple's public API, and each use of a library's private
#: name with the reason there is no public one
FOREIGN_PRIVATE_OK = {"_asdict", "_replace", "_fields", "_make"}
LIBRARY_PRIVATE = {
    # google-genai's typed batch job drops batchStats (done / total) and the raw answer the archive keeps; its
    # transport (auth, base URL, API version) is only reachable as the client's _api_client
    ("omniseg.models.api.gemini.batch", "_api_client"),
}


def test_no_module_reads_another_objects_private_names():
    """Attribute access, not only imports: ``m._prompt()`` on a model from another module is a private hook used
    from outside; a method meant for others is public (self.x and cls.x are the object's own business)."""
    found = []
    for p in sorted(PKG.rglob("*.py")):
        mod = module_name(p)
        for node in ast.walk(ast.parse(p.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in FOREIGN_PRIVATE_OK or (mod, node.attr) in LIBRARY_PRIVATE:
                continue
            found.append(f"{p.relative_to(REPO)}:{node.lineno}: {ast.unparse(node.value)[:40]}.{node.attr}")
    assert not found, "private names read from outside their object:\n" + "\n".join(found)
