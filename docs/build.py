"""Build the docs site: assemble a Sphinx source tree under _proc/docs (the README as index, one page per module
notebook with its prose and code followed by the module's signatures and docstrings, and the committed smoke report
with its figures), then run sphinx-build into _docs/. Usage: python docs/build.py [OUT]"""
import json, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT/"_proc"/"docs"
RUN = "smoke"

def module_of(nb: dict):
    "The module a notebook exports (`#| default_exp name`), or None."
    for c in nb["cells"]:
        m = re.match(r"#\|\s*default_exp\s+(\S+)", "".join(c["source"]).strip())
        if c["cell_type"] == "code" and m: return re.sub(r"\.__init__$", "", m.group(1))   # a package's notebook documents the package
    return None

def module_page(src: Path, dest: Path) -> str:
    "Copy a module notebook without its nbdev directive-only cells, ending with an API section (autodoc); its module."
    nb = json.loads(src.read_text()); mod = module_of(nb)
    keep = [c for c in nb["cells"] if not re.fullmatch(r"(#\|[^\n]*\n?)+", "".join(c["source"]).strip() + "\n")]
    keep.append({"cell_type": "markdown", "id": "apidocs0", "metadata": {},
                 "source": [f"## API: `omind.{mod}`\n\n", "```{eval-rst}\n", f".. automodule:: omind.{mod}\n", "   :members:\n", "```\n"]})
    nb["cells"] = keep
    dest.write_text(json.dumps(nb, indent=1)); return mod

def report_page(dest: Path) -> None:
    "The committed smoke run's report, its lm-eval check when present, and every figure."
    parts = [f"# The {RUN} run\n", f"The report the evaluate stage wrote (`results/{RUN}/evaluate/report.md`), then the figures (`figures/{RUN}/`).\n"]
    rep = ROOT/"results"/RUN/"evaluate"/"report.md"
    if rep.exists(): parts.append(re.sub(r"^(#+) ", r"#\1 ", rep.read_text(), flags=re.M))       # one level down
    lm = ROOT/"results"/RUN/"lmeval"/"report.md"
    if lm.exists(): parts += ["## Core scores checked by lm-evaluation-harness\n", lm.read_text()]
    figs = sorted((ROOT/"figures"/RUN).glob("*.png"))
    if figs: parts += ["## Figures\n"] + [f"### {f.stem.replace('_', ' ')}\n\n![{f.stem}](figures/{RUN}/{f.name})\n" for f in figs]
    dest.write_text("\n".join(parts))

def assemble() -> Path:
    shutil.rmtree(SRC, ignore_errors=True); (SRC/"modules").mkdir(parents=True)
    shutil.copy(ROOT/"docs"/"conf.py", SRC/"conf.py"); shutil.copytree(ROOT/"docs"/"_static", SRC/"_static")
    if (ROOT/"figures").exists():                            # every committed figure folder: the README shows several
        shutil.copytree(ROOT/"figures", SRC/"figures", ignore=lambda d, fs: [f for f in fs if not f.endswith(".png") and not (Path(d)/f).is_dir()])
    pages = []
    for nb in sorted((ROOT/"nbs").glob("[0-9]*.ipynb")):
        if module_of(json.loads(nb.read_text())): module_page(nb, SRC/"modules"/nb.name); pages.append(nb.stem)
    (SRC/"modules"/"index.md").write_text("# Modules\n\nOne page per notebook: its prose, code and tests, then the module's signatures and docstrings.\n\n"
                                          "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n")
    report_page(SRC/"report.md")
    readme = (ROOT/"README.md").read_text()
    (SRC/"index.md").write_text(readme + "\n\n```{toctree}\n:hidden:\n:maxdepth: 1\n\nmodules/index\nreport\n```\n")
    return SRC

def main(out=None) -> int:
    src = assemble(); out = Path(out or ROOT/"_docs")
    return subprocess.call([sys.executable, "-m", "sphinx", "-q", "-b", "html", "-j", "1", str(src), str(out)])

if __name__ == "__main__": sys.exit(main(*sys.argv[1:]))
