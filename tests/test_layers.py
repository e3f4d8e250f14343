"""The omind modules form layers: no import circles, counting imports inside functions too (a lazy import is still a
dependency: it only hides the circle until the function runs). Lower layers never import higher ones."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/"omind"
# the foundation, bottom up: modules that import no other omind module, then core and stages, which build only on them
FOUNDATION = {"omind.params_file": set(), "omind.readers": set(), "omind.text": set(), "omind.stats": set(), "omind.registry": set(), "omind.prompts": set(),
              "omind.core": {"omind.params_file"}, "omind.stages": {"omind.core", "omind.params_file"}}


def module_files(pkg: Path = PKG) -> dict:
    "dotted module name -> file, for every module of the package (nbdev's `_modidx` is an index, not code)."
    out = {}
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if rel.name != "_modidx": out[".".join(parts)] = f
    return out


def imports_of(name: str, f: Path, known) -> set:
    "The omind modules that module `name` imports anywhere in its file (module level or inside functions)."
    package = name if f.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import): targets = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = ".".join(package.split(".")[:len(package.split(".")) - n.level + 1]) if n.level else ""
            mod = ".".join(x for x in (base, n.module) if x)
            targets = [mod] + [f"{mod}.{a.name}" for a in n.names]           # `from omind import llm` imports omind.llm
        else: continue
        for t in targets:
            while t and t not in known: t = t.rpartition(".")[0]              # omind.llm.GenConfig -> omind.llm
            if t and t != name and t != "omind": out.add(t)
    return out


def import_graph(pkg: Path = PKG) -> dict:
    files = module_files(pkg)
    return {m: imports_of(m, f, files) for m, f in files.items()}


def find_cycle(graph: dict):
    "One import circle as a list of modules (first == last), or None."
    state, stack = {}, []
    def visit(m):
        state[m] = "open"; stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open": return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)): return c
        state[m] = "done"; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c
    return None


def test_no_import_circles():
    c = find_cycle(import_graph())
    assert c is None, "import circle: " + " -> ".join(c)


def test_foundation_imports_nothing_above_it():
    g = import_graph()
    for m, allowed in FOUNDATION.items():
        assert g[m] <= allowed, (m, sorted(g[m] - allowed))


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    "The checks above could fail: a circle closed by an import inside a function, written relatively, is found."
    pkg = tmp_path/"omind"; pkg.mkdir()
    (pkg/"__init__.py").write_text("")
    (pkg/"low.py").write_text("def f():\n    from .high import g\n    return g\n")
    (pkg/"high.py").write_text("from omind.low import f\n")
    (pkg/"other.py").write_text("from omind import low\nimport omind.high as H\n")
    g = import_graph(pkg)
    assert g["omind.low"] == {"omind.high"} and g["omind.high"] == {"omind.low"} and g["omind.other"] == {"omind.low", "omind.high"}
    assert find_cycle(g) in (["omind.high", "omind.low", "omind.high"], ["omind.low", "omind.high", "omind.low"])
    (pkg/"low.py").write_text("def f(): return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_task_families_build_only_on_the_base():
    "omind.tasks.base knows no family; a family module builds on the base, never on another family or on the package."
    g = import_graph()
    fams = {m for m in g if m.startswith("omind.tasks.") and m != "omind.tasks.base"}
    assert {"omind.tasks.mcqa", "omind.tasks.classification", "omind.tasks.root_cause", "omind.tasks.qa", "omind.tasks.conversation"} <= fams
    assert not {m for m in g["omind.tasks.base"] if m.startswith("omind.tasks")}
    for f in fams:
        assert "omind.tasks.base" in g[f] and not ({m for m in g[f] if m.startswith("omind.tasks")} - {"omind.tasks.base"}), (f, sorted(g[f]))
    assert fams <= g["omind.tasks"]                                    # importing omind.tasks registers every family
