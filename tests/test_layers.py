"""The package's layers: each part imports only parts below it (no cycles), so io reads files
and returns objects, ik never reads files, and the CLI and the batch runner sit on one pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

import kinfunc

ROOT = Path(kinfunc.__file__).parent

# lowest first; a part may import its own layer's other parts only where listed in CORE order
LAYERS = [
    ("_pytree", "tree", "allocator", "transforms", "functions", "markersets", "filters", "model", "trial", "models",
     "kernels", "fk", "kinematics", "compiled", "nn"),
    ("ik",),
    ("io",),
    ("viewer", "report"),
    ("pipeline", "demo"),
    ("batch", "cli", "__main__"),
]
RANK = {part: k for k, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """Top-level part of ``kinfunc.<part>...`` (``""`` for the package itself)."""
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else ""


def _imports() -> dict[str, set[str]]:
    """Module name -> the kinfunc modules it imports (``from .. import x`` counts as ``kinfunc.x``)."""
    out = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod == "kinfunc":  # from .. import x: the submodule x
                    deps.update(f"kinfunc.{a.name}" for a in node.names)
                elif mod.startswith("kinfunc"):
                    deps.add(mod)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("kinfunc"))
        out[name] = deps
    return out


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _imports()} - {""}
    assert parts <= set(RANK), f"give these parts a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_parts_import_only_parts_below_them():
    bad = []
    for mod, deps in _imports().items():
        a = _part(mod)
        if not a:
            continue
        for d in deps:
            b = _part(d)
            if b and b != a and b in RANK and RANK[b] > RANK[a]:
                bad.append(f"{mod} imports {d} ({a} is below {b})")
            if RANK.get(a) == 0 and RANK.get(b) == 0 and b != a and LAYERS[0].index(b) > LAYERS[0].index(a):
                bad.append(f"{mod} imports {d} (core order: {b} comes after {a})")
    assert not bad, "\n".join(sorted(bad))


def test_ik_never_reads_files():
    ik = [m for m in _imports() if _part(m) == "ik"]
    for mod in ik:
        src = (ROOT.parent / Path(*mod.split("."))).with_suffix(".py")
        if not src.exists():
            src = ROOT.parent / Path(*mod.split(".")) / "__init__.py"
        tree = ast.parse(src.read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "open" not in calls, f"{mod} opens files; reading belongs in kinfunc.io"


def test_public_names_are_few_and_old_ones_warn():
    import warnings

    import pytest

    assert len(kinfunc.__all__) <= 25 and len(kinfunc.ik.__all__) <= 15  # 25: kinfunc.nn (issue 15)
    for mod in (kinfunc, kinfunc.ik, kinfunc.io):
        for name in mod.__all__:
            assert getattr(mod, name) is not None and not name.startswith("_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in kinfunc.ik.__all__:
            getattr(kinfunc.ik, name)  # no warning
    from kinfunc.ik.solve import build_problem

    with pytest.warns(DeprecationWarning, match="import it from kinfunc.ik.solve"):
        assert kinfunc.ik.build_problem is build_problem
    with pytest.warns(DeprecationWarning, match="kinfunc.allocator"):
        assert kinfunc.retain_freed_memory is kinfunc.allocator.retain_freed_memory
    with pytest.raises(AttributeError):
        kinfunc.ik.no_such_name
