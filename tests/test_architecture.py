"""The two wings: ntklib (the science) imports nothing from ntkbook (the publishing); no import
cycle inside ntklib; no import inside a function; sweep is batching that imports no model."""

import ast
import hashlib
import re
from pathlib import Path

from conftest import ROOT

LAZY = {
    ("ntkbook/__init__.py", "ntkbook"),  # PEP 562 export: the CLI must not import JAX
    # matplotlib where the Performance figure is drawn: 1.3 -> 0.6 s per `python -m ntkbook`
    ("ntkbook/performance.py", "matplotlib.figure"),
}


def _modules(pkg: str) -> dict[str, ast.Module]:
    return {
        p.relative_to(ROOT).as_posix(): ast.parse(p.read_text())
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_ntklib_imports_nothing_from_ntkbook():
    for path, tree in _modules("ntklib").items():
        bad = {n for n in _imported(tree) if n == "ntkbook" or n.startswith("ntkbook.")}
        assert not bad, f"{path} imports {bad}"


def test_no_import_inside_a_function():
    for pkg in ("ntklib", "ntkbook", "benchmarks"):
        for path, tree in _modules(pkg).items():
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        mod = getattr(node, "module", None) or node.names[0].name
                        assert (path, mod) in LAZY, (
                            f"{path}:{node.lineno} imports {mod} in {fn.name}"
                        )


def _graph() -> dict[str, set[str]]:
    mods = {Path(p).stem: tree for p, tree in _modules("ntklib").items()}
    graph = {}
    for name, tree in mods.items():
        deps = set()
        for n in _imported(tree):
            parts = n.split(".")
            if parts[0] == "ntklib" and len(parts) > 1 and parts[1] in mods:
                deps.add(parts[1])
        graph[name] = deps - {name}
    return graph


def test_no_import_cycle_in_ntklib():
    graph = _graph()
    graph.pop("__init__")  # the package imports every module; no module imports the package
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in graph[n]:
            assert state.get(m) != 1, f"import cycle: {' -> '.join([*path, n, m])}"
            if m not in state:
                visit(m, [*path, n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_sweep_is_generic_batching():
    models = {"mlp", "empirical", "narrow", "finite", "hierarchy", "train", "infinite", "depth"}
    assert not (_graph()["sweep"] & models), _graph()["sweep"]
    assert "sweep" in _graph()["empirical"]  # the Monte Carlo engines sit above it


def test_public_api_is_sorted_and_complete():
    import types

    import ntklib as nl

    assert nl.__all__ == sorted(nl.__all__)
    assert all(hasattr(nl, n) for n in nl.__all__)
    assert isinstance(nl.sweep, types.ModuleType) and isinstance(nl.hierarchy, types.ModuleType)
    for n in nl.__all__:  # every public function documents its arguments
        obj = getattr(nl, n)
        if callable(obj) and not isinstance(obj, type):
            assert (obj.__doc__ or "").strip(), f"ntklib.{n} has no docstring"


def test_chapter_cache_key_covers_ntklib_not_ntkbook():
    from ntkbook.cache_keys import library_hash
    from ntkbook.project import library_root

    assert library_root() == ROOT / "ntklib"
    h = hashlib.sha256()
    for p in sorted((ROOT / "ntklib").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    assert library_hash() == h.hexdigest()  # the site's HTML code (ntkbook) is not in it


def test_docstring_formula_blocks_become_literal_blocks():
    from ntkbook.sphinx_ext import literal_formula_blocks

    doc = ["Text:", "", "    K = |a|^2 |b|^2", "", "more text", "", "Arguments:", "    x: y", ""]
    assert literal_formula_blocks(doc) == [
        "Text:",
        "",
        "::",
        "",
        "    K = |a|^2 |b|^2",
        "",
        "more text",
        "",
        "Arguments:",
        "    x: y",
        "",
    ]
    bullet = ["* item:", "", "      f = |x|", "", "  continued", ""]
    assert literal_formula_blocks(bullet)[2:4] == ["::", ""]  # at the bullet's body indent
    assert literal_formula_blocks(["a::", "", "    b"]) == ["a::", "", "    b"]


DOCUMENTED = (
    "mlp empirical train hierarchy nth ode narrow finite sweep keys trig activations"
    " kernel_maps infinite stats eoc depth depth_width"
).split()


def _documented_objects():
    """``(qualified name, object, parameters, docstring)`` for every public function and class
    defined in a documented module (jitted functions included) and every public method."""
    import importlib
    import inspect

    for mod_name in DOCUMENTED:
        mod = importlib.import_module(f"ntklib.{mod_name}")  # not ntklib.mlp, the function
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or hasattr(obj, "__wrapped__")):
                continue
            if inspect.isclass(obj) and issubclass(obj, Warning | Exception):
                continue  # a warning or error class: documented by its docstring alone
            qual = f"ntklib.{mod_name}.{name}"
            yield qual, obj, inspect.signature(obj).parameters, inspect.getdoc(obj) or ""
            if inspect.isclass(obj):
                for m_name, meth in vars(obj).items():
                    if not m_name.startswith("_") and inspect.isfunction(meth):
                        params = inspect.signature(meth).parameters
                        yield f"{qual}.{m_name}", meth, params, inspect.getdoc(meth) or ""


def _entries(doc: str) -> dict[str, str]:
    """``{name: text}`` of the ``Arguments:`` and ``Attributes:`` entries of a docstring."""
    import re

    entries: dict[str, str] = {}
    lines, current, base = doc.splitlines(), None, None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if re.fullmatch(r"(Arguments|Attributes):", line.strip()):
            current, base = "", None
            continue
        if current is None:
            continue
        if (
            not line.strip()
            or (base is not None and indent < base)
            or (base is None and indent == 0)
        ):
            current = None  # the section ends at a blank line or a dedent
            continue
        m = re.match(r"\s*(\w+(?:, \w+)*): ", line)
        if base is None or (indent == base and m):
            base = indent
            names = m.group(1).split(", ") if m else []
            for n in names:
                entries[n] = line.strip()
            current = ",".join(names)
        else:
            for n in current.split(","):
                if n:
                    entries[n] += " " + line.strip()
    return entries


def test_every_argument_is_documented_with_its_default():
    """The docstring standard of the API page: each argument (each field, for a class) has an
    ``Arguments:`` (``Attributes:``) entry ``name: meaning``, which names its default if it has
    one; ``self``, ``*args`` and ``**kwargs`` are exempt."""
    import inspect

    seen, missing = 0, []
    for qual, _, params, doc in _documented_objects():
        seen += 1
        if not doc.strip():
            missing.append(f"{qual}: no docstring")
        entries = _entries(doc)
        for p in params.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name not in entries:
                missing.append(f"{qual}: no entry for {p.name}")
            elif p.default is not inspect.Parameter.empty and "default" not in entries[p.name]:
                missing.append(f"{qual}: the entry for {p.name} names no default")
    assert seen > 50, seen  # the walk found the modules' functions
    assert not missing, "\n".join(missing)


def test_theorem_blocks_carry_the_papers_numbers_not_the_books():
    """A ``prf:theorem`` block is titled by the paper's own result (or says it is derived
    here) and has no book-wide counter, so the block and the sentence citing it agree."""
    found = 0
    for nb in sorted((ROOT / "notebooks").glob("*.md")):
        for m in re.finditer(r"```\{prf:theorem\}([^\n]*)\n((?::\w+:[^\n]*\n)*)", nb.read_text()):
            found += 1
            title, options = m[1].strip(), m[2]
            assert ":nonumber:" in options, f"{nb.name}: {title!r} is numbered by the book"
            cites = re.search(r"\b(Theorem|Proposition|Lemma|Corollary|Sec\.) ?\d", title)
            assert cites or "derived here" in title, f"{nb.name}: {title!r} names no result"
    assert found >= 9


def test_no_private_name_crosses_a_module_boundary():
    """No module imports another module's ``_name``, and no package reaches into another
    package's private module (``ntkbook`` into ``ntklib._io``, ``benchmarks`` into
    ``ntkbook.params._x``); a package's own private modules (``ntklib._checks``) serve it."""
    bad = []
    for folder in ("ntklib", "ntkbook", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ImportFrom) or not node.module:
                    continue
                top = node.module.split(".")[0]
                if top not in ("ntklib", "ntkbook"):
                    continue
                parts = node.module.split(".")
                for alias in node.names:
                    is_module = (ROOT / Path(*parts) / f"{alias.name}.py").exists()
                    if alias.name.startswith("_") and not (is_module and top == folder):
                        bad.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
                if top != folder and any(p.startswith("_") for p in parts[1:]):
                    bad.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert not bad, bad
