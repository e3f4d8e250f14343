"""The docs site (`make docs`): built from the README, the module notebooks and the committed smoke report, then opened
in headless Chromium: the index, a module page and the report page render, and every image on them loads."""
import re, shutil, subprocess, sys
from pathlib import Path
import pytest

for _m in ("sphinx", "myst_nb", "sphinx_book_theme"):
    pytest.importorskip(_m, reason="the docs extra is not installed (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
PAGES = [("index.html", "omind", 5), ("modules/14_lmeval.html", "lmeval_check", 0), ("report.html", "The smoke run", 5)]

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, str(ROOT/"docs"/"build.py"), str(out)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out

def test_site_has_the_pages(site):
    for page, text, _ in PAGES: assert text in (site/page).read_text(), page
    api = (site/"modules"/"14_lmeval.html").read_text()
    assert "API: " in api and "Run lm-eval on" in api                        # autodoc: signature and docstring
    n_modules = len(list((site/"modules").glob("[0-9]*.html")))
    assert n_modules == sum(1 for nb in (ROOT/"nbs").glob("[0-9]*.ipynb") if "default_exp" in nb.read_text())
    assert len(list((site/"_images").glob("*.png"))) >= 5                    # the smoke figures travelled with the site

def dump_dom(url: str) -> str:
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                        "--virtual-time-budget=10000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: install the Debian package (apt-get install -y chromium) to open the site")
def test_pages_render_in_headless_chromium(site):
    for page, text, min_images in PAGES:
        dom = dump_dom((site/page).as_uri())
        body = re.search(r"<body[^>]*>", dom).group(0)
        ok, broken = (int(re.search(rf'data-img-{k}="(\d+)"', body).group(1)) for k in ("ok", "broken"))
        assert text in dom, page
        assert broken == 0 and ok >= min_images, f"{page}: {ok} images loaded, {broken} broken"
