"""Sphinx configuration of the course's website (`make site`; docs/build.py stages the sources and runs Sphinx).

Sphinx + MyST-NB + the book theme: the notebooks are read with their stored outputs (never executed), math is
typeset by a MathJax served from the site itself, and nothing a page loads comes from another host (the
browser tests in tests_browser/test_site.py check every request).
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

from pygments.lexers.special import TextLexer

from mmkd_utils.notebooks import BRANCH, REPO_SLUG, colab_url

ROOT = Path(__file__).resolve().parents[1]

project = "mmkd"
author = "the mmkd course"
copyright = "code MIT; OpenMoji images CC BY-SA 4.0"  # noqa: A001 (Sphinx's name)
html_title = "mmkd · knowledge distillation in multimodal learning"

extensions = ["myst_nb", "sphinx_design"]
exclude_patterns = ["**/.ipynb_checkpoints"]

# The notebooks' stored outputs are the site's: nbval tests them, nothing is re-executed here.
nb_execution_mode = "off"
nb_merge_streams = True  # consecutive stdout outputs in one box, as JupyterLab shows them
nb_ipywidgets_js = {}  # no widget manager from a CDN (the stored notebooks carry no widget state)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph or list item, as Jupyter typesets it
myst_heading_anchors = 6  # the README's links to results/README.md#heading resolve to those headings

# MathJax 3 from the django-static-mathjax wheel, copied into _static/mathjax/ after the build (see setup).
mathjax_path = "mathjax/tex-chtml.js"
MATHJAX_PARTS = ["tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y", "sre"]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "auto"}  # light or dark as the reader's system prefers (and no console error)
html_copy_source = False  # the notebooks are offered as .ipynb files on their pages instead
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "repository_url": f"https://github.com/{REPO_SLUG}",
    "repository_branch": BRANCH,
    "use_repository_button": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "navbar_persistent": [],  # search sits in the sidebar (a second search field in an empty top bar otherwise)
}


def launch_links(app, pagename, templatename, context, doctree):
    """A notebook's page starts with its Colab link (from mmkd_utils.notebooks, where the repository's address
    is kept) and a link to download the stored notebook."""
    notebook = f"{pagename}.ipynb"
    if not (pagename.startswith("notebooks/") and (ROOT / notebook).is_file() and "body" in context):
        return
    name = html.escape(Path(notebook).name)
    context["body"] = (
        '<div class="mmkd-launch">'
        f'<a class="mmkd-colab" href="{html.escape(colab_url(notebook))}">Launch in Colab</a>'
        f'<a class="mmkd-download" href="{name}" download="{name}">Download {name}</a>'
        "</div>\n" + context["body"])


def copy_assets(app, exception):
    """After a successful build: MathJax (only the parts the pages load, or a reader's menu may ask for) into
    _static/mathjax/, and each notebook as stored beside its page, for the download link."""
    if exception is not None:
        return
    import mathjax  # the django-static-mathjax wheel: MathJax's own release files

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        source = es5 / part
        if source.is_dir():
            shutil.copytree(source, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / part)
    for docname in app.env.found_docs:
        if docname.startswith("notebooks/") and (ROOT / f"{docname}.ipynb").is_file():
            shutil.copy2(ROOT / f"{docname}.ipynb", Path(app.outdir) / f"{docname}.ipynb")


def setup(app):
    app.add_lexer("mermaid", TextLexer)  # notebook 01 quotes a Mermaid graph as code: shown as text
    app.connect("html-page-context", launch_links)
    app.connect("build-finished", copy_assets)
