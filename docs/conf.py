# Sphinx configuration of the omind docs site (`make docs`). docs/build.py copies this file into the generated source
# tree (_proc/docs) beside the README, the module notebooks and the smoke report, then runs sphinx-build into _docs/.
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]          # _proc/docs/conf.py -> the repository
sys.path.insert(0, str(ROOT))

project = "omind"
author = "omind developers"
extensions = ["myst_nb", "sphinx.ext.autodoc"]
nb_execution_mode = "off"                            # the notebooks are shown as committed (clean); nothing runs
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header", "myst.xref_missing", "misc.highlighting_failure", "toc.not_included", "autodoc"]
html_theme = "sphinx_book_theme"
html_title = "omind"
html_static_path = ["_static"]
html_js_files = ["imgcheck.js"]
html_theme_options = {"show_toc_level": 2}
