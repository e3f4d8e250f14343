"""Packaging: the runtime requirements are what `omind` imports (no notebook toolchain, no tracker), the extras hold
the rest, and constraints.txt pins the environment the tests run in. (`make check-install` resolves `pip install .`
in a fresh venv against the package index; these checks need no network.)"""
import ast, configparser, re, shlex, sys
from importlib.metadata import packages_distributions, version, PackageNotFoundError
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLCHAIN = {"nbdev", "execnb", "jupyterlab", "jupytext", "pytest"}
TRACKERS = {"tensorboard", "wandb", "mlflow", "trackio"}
NOT_IMPORTED = {"gguf": "transformers reads the embedded GGUF model with it", "ipykernel": "the kernel papermill runs the stage notebooks in"}


def norm(name: str) -> str: return re.sub(r"[-_.]+", "-", name).lower()
def req_name(req: str) -> str: return norm(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0])


def settings():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT/"settings.ini", encoding="utf-8")
    return cfg["DEFAULT"]


@pytest.fixture(scope="module")
def setup_kwargs(tmp_path_factory):
    "What setup.py passes to setuptools.setup (run with setup() replaced by a recorder)."
    import os, setuptools
    got, real, cwd = {}, setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kw: got.update(kw)
    try: os.chdir(ROOT); exec(compile((ROOT/"setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    finally: setuptools.setup = real; os.chdir(cwd)
    return got


EXTRA_MODULES = {"lmeval.py": "lmeval"}

def omind_imports() -> set:
    "Top-level names of the third-party modules that omind/*.py import (at module level or inside functions)."
    mods = set()
    for f in (ROOT/"omind").glob("*.py"):
        if f.name in EXTRA_MODULES: continue                 # commands of an extra (omind lm-eval: the lmeval extra)
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import): mods |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module: mods.add(n.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "omind"}


def test_runtime_requirements_are_what_omind_imports():
    req = {req_name(r) for r in shlex.split(settings()["requirements"])}
    dists = packages_distributions()
    missing_dist = sorted(m for m in omind_imports() if m not in dists)
    assert not missing_dist, f"imported but not installed: {missing_dist}"
    needed = {norm(dists[m][0]) for m in omind_imports()}
    assert needed <= req, f"imported by omind but not a runtime requirement: {sorted(needed - req)}"
    assert not (req - needed - set(NOT_IMPORTED)), f"runtime requirements omind does not import: {sorted(req - needed - set(NOT_IMPORTED))}"
    assert not req & (TOOLCHAIN | TRACKERS | {"httpx"}), sorted(req & (TOOLCHAIN | TRACKERS | {"httpx"}))


def test_extras_hold_the_toolchain_and_the_trackers(setup_kwargs):
    ex = setup_kwargs["extras_require"]
    assert any(req_name(r) == "lm-eval" for r in ex["lmeval"])              # what omind/lmeval.py imports lives in its extra
    assert TOOLCHAIN <= {req_name(r) for r in ex["dev"]}
    assert "nbdev==2.4.14" in ex["dev"] and "execnb==0.1.16" in ex["dev"]       # the versions the notebooks build with
    for t in TRACKERS: assert ex[t] == [t]
    assert not {req_name(r) for r in setup_kwargs["install_requires"]} & TOOLCHAIN
    here = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert here in setup_kwargs["classifiers"], "the Python the tests run on is not among the classifiers"


def test_constraints_pin_this_environment():
    "Every line is `name==version`; torch (TORCH_SPEC picks the build) and omind are not pinned; every runtime and dev requirement is, at the installed version."
    lines = [l for l in (ROOT/"constraints.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s=]+", l) for l in lines), [l for l in lines if "==" not in l]
    pins = {norm(l.split("==")[0]): l.split("==")[1] for l in lines}
    assert not {"torch", "omind", "pip", "setuptools"} & set(pins) and not any(p.startswith("nvidia-") for p in pins)
    reqs = {req_name(r) for r in shlex.split(settings()["requirements"]) + shlex.split(settings()["dev_requirements"])} - {"torch"}
    assert reqs <= set(pins), f"not pinned: {sorted(reqs - set(pins))}"
    stale = {}
    for r in sorted(reqs):
        try: v = version(r)
        except PackageNotFoundError: continue
        if v != pins[r]: stale[r] = (pins[r], v)
    assert not stale, f"constraints.txt is not this environment (pinned, installed): {stale}; run `make constraints`"


def test_module_docstrings_are_whole_sentences():
    "Every module's docstring (nbdev's `> description` line of its notebook) is a whole sentence, not cut at a line break."
    cut = []
    for f in sorted((ROOT/"omind").rglob("*.py")):
        if f.name in ("__init__.py", "_modidx.py"): continue
        doc = ast.get_docstring(ast.parse(f.read_text(encoding="utf-8")))
        if not doc or not doc.rstrip().endswith((".", ".)", "?")): cut.append((str(f.relative_to(ROOT)), (doc or "")[-40:]))
    assert not cut, cut
