"""The course in a real JupyterLab (`make test-browser`): every notebook's stored outputs render without
an error, opening and saving a notebook leaves `git status` clean, and notebook 01's temperature slider
redraws its figure. Screenshots for a person to look at go to build/screenshots/."""
from __future__ import annotations

import re
import time

import nbformat
import pytest

from conftest import REPO_ROOT, SCREENSHOTS, git

NOTEBOOKS = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))
MAX_SCREENSHOTS_PER_NOTEBOOK = 40
# Text that JupyterLab or ipywidgets put in the page when an output or a widget fails to render.
RENDER_ERRORS = ["Error displaying widget", "Javascript Error", "No renderer could be found", "Error rendering output"]

# Open a notebook and wait until JupyterLab has its kernel's spec and info: that is when JupyterLab
# rewrites the notebook's kernelspec and language_info metadata (the "opened = modified" bug).
OPEN = """async (path) => {
  const within = (promise, what) => Promise.race([promise, new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`${path}: ${what} took over 120 s`)), 120000))]);
  const app = window.jupyterapp;
  const panel = await within(app.commands.execute('docmanager:open', {path, factory: 'Notebook'}), 'opening');
  await within(panel.context.ready, 'loading');
  await within(panel.sessionContext.ready, 'starting the kernel');
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel) { throw new Error(path + ': no kernel started'); }
  await within(kernel.info, "the kernel's info");
  await within(kernel.spec, "the kernel's spec");
  await within(panel.revealed, 'rendering');
  await new Promise(resolve => setTimeout(resolve, 500));
  return {kernel: kernel.name, windowing: panel.content.notebookConfig.windowingMode};
}"""

# What the page shows of the current notebook: its cells, their outputs, the images that did not load,
# MathJax's errors and any text of a failed render.
INSPECT = """(renderErrors) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = [...panel.content.node.querySelectorAll('.jp-Cell')];
  const outputs = cells.map(cell => cell.querySelectorAll('.jp-OutputArea-child').length);
  const images = [...panel.content.node.querySelectorAll('.jp-OutputArea-output img')];
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src.slice(0, 80));
  const text = panel.content.node.innerText;
  const stderr = [...panel.content.node.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(node => node.innerText.slice(0, 300));
  const errors = panel.content.model.toJSON().cells.flatMap(
      (cell, i) => (cell.outputs || []).filter(o => o.output_type === 'error').map(o => `cell ${i}: ${o.ename}: ${o.evalue}`));
  const math = [...panel.content.node.querySelectorAll('mjx-merror')].map(node => node.getAttribute('data-mjx-error') || node.textContent);
  return {cells: cells.length, outputs, images: images.length, broken, stderr, errors, math,
          renderErrors: renderErrors.filter(message => text.includes(message))};
}"""

# The element that scrolls the current notebook.
SCROLLER = "window.jupyterapp.shell.currentWidget.content.node.querySelector('.jp-WindowedPanel-outer')"


def open_notebook(page, path: str) -> dict:
    opened = page.evaluate(OPEN, path)
    # A widget output waits ("Loading widget...") until the widget manager has asked the kernel for its widgets.
    page.wait_for_function("!window.jupyterapp.shell.currentWidget.content.node.innerText.includes('Loading widget...')",
                           polling=250, timeout=30_000)
    return opened


def close_all(page) -> None:
    page.evaluate("window.jupyterapp.commands.execute('application:close-all')")


def screenshots(page, stem: str) -> int:
    """Page through the open notebook, one screenshot a screen (at most MAX_SCREENSHOTS_PER_NOTEBOOK)."""
    for old in SCREENSHOTS.glob(f"{stem}-*.png"):
        old.unlink()
    height, screen = page.evaluate(f"(() => {{ const s = {SCROLLER}; return [s.scrollHeight, s.clientHeight]; }})()")
    count = min(MAX_SCREENSHOTS_PER_NOTEBOOK, -(-height // screen))
    for i in range(count):
        page.evaluate(f"(() => {{ const s = {SCROLLER}; s.scrollTop = {i * screen}; }})()")
        page.wait_for_timeout(100)
        page.screenshot(path=str(SCREENSHOTS / f"{stem}-{i + 1:02d}.png"))
    page.evaluate(f"(() => {{ const s = {SCROLLER}; s.scrollTop = 0; }})()")
    return count


def shown_outputs(cell) -> list:
    """A cell's outputs as JupyterLab shows them: consecutive stream outputs of one name in one box."""
    shown = []
    for output in cell.get("outputs", []):
        if shown and output.output_type == "stream" == shown[-1].output_type and output.name == shown[-1].name:
            continue
        shown.append(output)
    return shown


def git_change(workspace, path: str) -> str:
    """'' if `path` is unchanged in the workspace repository, else its status and the start of its diff."""
    status = git(workspace, "status", "--porcelain", "--", path)
    return status and status + git(workspace, "diff", "--", path)[:4000]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders_and_saves_unchanged(page, workspace, name):
    path = f"notebooks/{name}"
    stored = nbformat.read(workspace / path, as_version=4)
    page.errors.clear()  # each notebook answers for its own
    opened = open_notebook(page, path)
    assert opened["windowing"] == "none", "the test's JupyterLab settings were not applied"
    try:
        found = page.evaluate(INSPECT, RENDER_ERRORS)
        assert found["cells"] == len(stored.cells), f"{path}: {found['cells']} cells in the page, {len(stored.cells)} stored"
        expected = [len(shown_outputs(cell)) for cell in stored.cells]
        assert found["outputs"] == expected, f"{path}: outputs per cell in the page {found['outputs']}, stored {expected}"
        assert not found["errors"], f"{path}: error outputs {found['errors']}"
        assert not found["stderr"], f"{path}: stderr or traceback outputs {found['stderr']}"
        assert not found["broken"], f"{path}: images that did not render: {found['broken']}"
        assert not found["renderErrors"], f"{path}: the page shows {found['renderErrors']}"
        assert not found["math"], f"{path}: LaTeX that MathJax could not typeset: {found['math']}"
        assert not page.errors, f"{path}: errors thrown in the page: {page.errors}"
        screenshots(page, name.removesuffix(".ipynb"))
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        change = git_change(workspace, path)
        assert not change, (f"{path}: opening and saving it in JupyterLab changed the file, so learners see it as "
                            f"modified; `python -m mmkd_utils.notebooks --clean-only {path}` stores what JupyterLab "
                            f"writes (or run `make notebooks`):\n{change}")
    finally:
        close_all(page)


def test_the_checks_see_what_they_look_for(page, workspace):
    """The checks above are not vacuous: a notebook with stale kernel metadata, broken LaTeX and a widget whose
    model is gone shows the render errors in the page and is changed on save."""
    path = "canary/broken.ipynb"
    nb = nbformat.read(REPO_ROOT / "notebooks" / NOTEBOOKS[0], as_version=4)
    nb.metadata["kernelspec"]["display_name"] = "Python 3"
    nb.metadata["language_info"].pop("version", None)
    show_a_lost_widget = ("from IPython.display import display\n"
                          "display({'application/vnd.jupyter.widget-view+json': {'version_major': 2, 'version_minor': 0, "
                          "'model_id': 'gone'}}, raw=True)")
    nb.cells[:0] = [nbformat.v4.new_markdown_cell(r"Broken LaTeX: $\frac{1}$"), nbformat.v4.new_code_cell(show_a_lost_widget)]
    (workspace / "canary").mkdir(exist_ok=True)
    nbformat.write(nb, workspace / path)
    git(workspace, "add", path)
    git(workspace, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "canary")
    try:
        open_notebook(page, path)
        assert page.evaluate(INSPECT, RENDER_ERRORS)["math"] == ["Missing argument for \\frac"]
        page.evaluate("(async () => { const panel = window.jupyterapp.shell.currentWidget; panel.content.activeCellIndex = 1;"
                      " await window.jupyterapp.commands.execute('notebook:run-cell'); })()")
        page.wait_for_function("window.jupyterapp.shell.currentWidget.content.node.innerText.includes('Error displaying widget')",
                               polling=250, timeout=30_000)
        assert "Error displaying widget" in page.evaluate(INSPECT, RENDER_ERRORS)["renderErrors"]
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        assert re.search(r'"display_name": "Python 3 \(ipykernel\)"', git(workspace, "diff", "--", path))
    finally:
        close_all(page)


RUN_ALL_AND_WAIT = """async (seconds) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const deadline = Date.now() + 1000 * seconds;
  await window.jupyterapp.commands.execute('notebook:run-all-cells');
  const code = () => panel.content.widgets.filter(cell => cell.model.type === 'code');
  const failed = () => panel.content.model.toJSON().cells.some(cell => (cell.outputs || []).some(o => o.output_type === 'error'));
  while (true) {
    const busy = panel.sessionContext.session.kernel.status !== 'idle';
    const pending = code().some(cell => cell.model.executionCount === null || cell.promptNode.textContent.includes('*'));
    if (failed() || (!busy && !pending)) { break; }
    if (Date.now() > deadline) { throw new Error(`Run All took over ${seconds} s`); }
    await new Promise(resolve => setTimeout(resolve, 250));
  }
}"""


def test_notebook_01_slider_redraws_the_figure(page, workspace):
    path = "notebooks/01_background.ipynb"
    page.errors.clear()
    open_notebook(page, path)
    start = time.perf_counter()
    page.evaluate(RUN_ALL_AND_WAIT, 240)
    seconds = time.perf_counter() - start
    found = page.evaluate(INSPECT, RENDER_ERRORS)
    assert not found["errors"], f"{path} run in JupyterLab: error outputs {found['errors']}"
    assert not found["renderErrors"], f"{path} run in JupyterLab: the page shows {found['renderErrors']}"
    interact = page.locator(".widget-interact").first
    interact.scroll_into_view_if_needed()
    figure = interact.locator(".jp-OutputArea-output img").first
    figure.wait_for(state="visible", timeout=30_000)
    before = figure.get_attribute("src")
    readout = interact.locator(".widget-readout").first
    value_before = readout.inner_text()
    interact.screenshot(path=str(SCREENSHOTS / "01_background-slider-before.png"))
    handle = interact.locator(".noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=10)  # T up by about 4
    page.mouse.up()
    page.wait_for_function("([img, before]) => img.isConnected && img.src !== before || !img.isConnected",
                           arg=[figure.element_handle(), before], timeout=30_000)
    figure = interact.locator(".jp-OutputArea-output img").first
    figure.wait_for(state="visible", timeout=30_000)
    after = figure.get_attribute("src")
    interact.screenshot(path=str(SCREENSHOTS / "01_background-slider-after.png"))
    assert readout.inner_text() != value_before, "the slider did not move"
    assert after != before, "moving the temperature slider did not change the figure"
    assert not page.errors, f"errors thrown in the page: {page.errors}"
    print(f"{path} ran in JupyterLab in {seconds:.0f} s; T {value_before} -> {readout.inner_text()}")
