"""A data scientist ships a model from JupyterLab with the Ship panel: no magic typed, no terminal."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

TRAIN = """\
import pandas as pd
from sklearn.linear_model import LogisticRegression

X = pd.DataFrame({"age": [22.0, 35.0, 47.0, 51.0, 62.0, 23.0, 44.0, 36.0],
                  "income": [1.0, 2.5, 3.0, 4.2, 5.1, 1.2, 3.3, 2.2]})
y = [0, 0, 1, 1, 1, 0, 1, 0]
clf = LogisticRegression().fit(X, y)
X_test = X.head(3)
"""
EXPORT_TIMEOUT_MS = 600_000  # verify builds a clean environment: 30-120 s, more on a cold cache


def write_notebook(path: Path, *sources: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)


def open_notebook(page, lab, name: str) -> None:
    page.goto(lab.lab_url(f"tree/{name}"))
    page.locator(".jp-NotebookPanel").first.wait_for()
    wait_idle(page)
    # The debugger button is enabled once the kernel's info arrived: before that, Run All is dropped.
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-DebuggerBugButton[aria-disabled='false']").wait_for()


def wait_idle(page, timeout: int = 60_000) -> None:
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
        timeout=timeout)


def menu(page, *labels: str) -> None:
    """Click through the menu bar, e.g. menu(page, "Run", "Run All Cells")."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{labels[0]}$")).click()
    for label in labels[1:]:
        # Only an enabled item: commands are disabled until the notebook's session is ready.
        item = page.locator(".lm-Menu:visible .lm-Menu-item:not(.lm-mod-disabled)",
                            has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(label)}$")))
        item.last.hover()
        page.wait_for_timeout(200)  # a menu acts on the item it has made active, after the hover settles
        item.last.click()


def run_all(page, cells: int, idle: bool = True) -> None:
    menu(page, "Run", "Run All Cells")
    # Every cell has run once its prompt shows an execution count.
    page.wait_for_function(
        """(n) => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
                 .filter(p => /\\[\\d+\\]/.test(p.textContent)).length >= n""",
        arg=cells, timeout=120_000)
    if idle:
        wait_idle(page)


def open_panel(page):
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .mlship-ToolbarButton").first.click()
    panel = page.locator("#mlship-panel")
    panel.wait_for(state="visible")
    return panel


def screenshot(page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}-lab.png"))
    # A tall window for a moment, so the whole panel fits in one picture without scrolling.
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 2000})
    try:
        page.locator("#mlship-panel .mlship-View").screenshot(path=str(folder / f"{name}-panel.png"))
    finally:
        page.set_viewport_size(size)


def use_theme(page, theme: str) -> None:
    menu(page, "Settings", "Theme", theme)
    page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme)


def in_viewport(locator) -> bool:
    """The element lies wholly inside the window and the sidebar's visible area: seen without scrolling."""
    return locator.evaluate(
        """(el) => { const r = el.getBoundingClientRect();
                     const p = document.querySelector('#mlship-panel').getBoundingClientRect();
                     return r.height > 0 && r.top >= Math.max(0, p.top) && r.left >= Math.max(0, p.left)
                            && r.bottom <= Math.min(window.innerHeight, p.bottom)
                            && r.right <= Math.min(window.innerWidth, p.right); }""")


def icon_centred(button) -> bool:
    """The button's icon sits on its label's line: their vertical centres within 1.5 px."""
    return button.evaluate(
        """(el) => { const c = (n) => { const r = n.getBoundingClientRect(); return r.top + r.height / 2; };
                     return Math.abs(c(el.querySelector('svg')) - c(el.querySelector('span:last-child'))) <= 1.5; }""")


def fill_colour(locator) -> str:
    return locator.evaluate("(el) => getComputedStyle(el.querySelector('svg [fill]')).fill")


def test_ship_a_trained_model_from_the_panel(lab, page, screenshots_dir):
    write_notebook(lab.root / "churn.ipynb", "%load_ext jupyter_mlship", TRAIN)
    open_notebook(page, lab, "churn.ipynb")
    run_all(page, 2)

    panel = open_panel(page)
    panel.locator("#mlship-model option[value='clf']").wait_for(state="attached")
    # The form starts on the variable named like a sample, not on the first frame (the training data X).
    assert panel.locator("#mlship-sample").input_value() == "X_test"
    # Selects are JupyterLab's: a caret, and the inputs' font and height.
    select = panel.locator("#mlship-sample")
    assert panel.locator(".jp-HTMLSelect:has(#mlship-sample) svg").count() == 1
    looks = "(el) => { const s = getComputedStyle(el); return [s.fontFamily, s.fontSize, el.offsetHeight]; }"
    assert select.evaluate(looks) == panel.locator("#mlship-rows").evaluate(looks)
    assert select.evaluate("(el) => getComputedStyle(el).textOverflow") == "ellipsis"
    panel.locator("#mlship-name").fill("Churn")
    assert "lowercase letters" in panel.locator(".mlship-FieldError").inner_text()  # validated as typed
    panel.locator("#mlship-name").fill("churn")
    assert panel.locator(".mlship-FieldError").count() == 0
    panel.locator("#mlship-model").select_option("clf")
    panel.locator("#mlship-method").select_option("predict_proba")
    panel.locator("#mlship-sample").select_option("X")
    assert panel.locator(".mlship-Command").inner_text() == "%ship churn --sample X --model clf --method predict_proba"

    panel.get_by_role("button", name="Review").click()
    # The whole review opens as rendered Markdown in a main-area tab; the sidebar keeps a summary.
    review = page.locator(".jp-MainAreaWidget .mlship-ReviewDocument .jp-RenderedMarkdown")
    review.wait_for(timeout=120_000)
    assert "clf" in review.inner_text()
    assert review.locator("table").count() >= 5 and review.locator("em").count() == 0
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tabLabel", has_text="Review: churn").wait_for()
    ready = panel.locator(".mlship-Result", has_text="Review ready")
    ready.wait_for()
    assert "summary is below" in ready.inner_text()
    summary = panel.locator(".mlship-ReviewSummary")
    assert ready.evaluate("(r, s) => r.getBoundingClientRect().bottom <= s.getBoundingClientRect().top",
                          summary.element_handle())
    assert "Artifacts" in summary.inner_text() and "clf" in summary.inner_text()
    assert not (lab.root / "services" / "churn").exists()  # a review writes nothing
    screenshot(page, screenshots_dir, "review-light")

    panel.get_by_role("button", name="Export").click()
    panel.locator(".mlship-Step", has_text="Capture").wait_for()
    screenshot(page, screenshots_dir, "export-running-light")
    done = panel.locator(".mlship-Result.mlship-mod-ok, .mlship-Run .mlship-Message.mlship-mod-error")
    done.first.wait_for(timeout=EXPORT_TIMEOUT_MS)
    errors = panel.locator(".mlship-Run .mlship-Message.mlship-mod-error")
    assert errors.count() == 0, errors.first.inner_text()

    result = panel.locator(".mlship-Result")
    # The outcome is scrolled into the sidebar's view: seen without scrolling.
    assert in_viewport(result), result.bounding_box()
    assert "Exported and verified" in result.inner_text()
    tests = re.search(r"Tests: (\d+) passed, (\d+) failed", result.inner_text())
    assert tests and int(tests[1]) > 0 and int(tests[2]) == 0
    project = lab.root / "services" / "churn"
    assert (project / "ship.json").is_file() and (project / "app" / "main.py").is_file()
    assert "services/churn" in result.locator(".mlship-ResultPath").inner_text()
    assert "clf" in (project / "REVIEW.md").read_text()
    assert json.loads((project / "ship.json").read_text())["name"] == "churn"

    # History lists this export once it is done.
    history = panel.locator(".mlship-HistoryItem", has_text="churn")
    history.first.wait_for()
    assert "verified" in history.first.inner_text()

    screenshot(page, screenshots_dir, "export-done-light")
    use_theme(page, "JupyterLab Dark")
    result.scroll_into_view_if_needed()  # the light screenshot's tall window scrolled the sidebar back up
    screenshot(page, screenshots_dir, "export-done-dark")
    # Icons on the blue and red buttons are drawn in the button's (white) text colour in the dark theme too.
    for name in ("Export", "Build image"):
        button = panel.get_by_role("button", name=name, exact=True)
        assert fill_colour(button) == button.evaluate("(el) => getComputedStyle(el).color") == "rgb(255, 255, 255)"
        assert icon_centred(button), name
    use_theme(page, "JupyterLab Light")

    # The project's files open inside JupyterLab.
    panel.get_by_role("button", name="Open app/main.py", exact=True).click()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tabLabel", has_text="main.py").wait_for()
    panel.get_by_role("button", name="Open REVIEW.md", exact=True).click()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tabLabel", has_text="REVIEW.md").first.wait_for()

    # Build image is either available or disabled with the reason from /mlship/builders.
    build = panel.get_by_role("button", name="Build image")
    if build.is_disabled():
        assert panel.locator(".mlship-Hint", has_text="Build image is unavailable").count() == 1
    else:  # a real build and smoke test, its log streamed into the panel
        build.click()
        panel.get_by_text(re.compile(r"Image build: (succeeded|failed|cancelled)")).wait_for(timeout=EXPORT_TIMEOUT_MS)
        text = panel.inner_text()
        assert "Image build: succeeded" in text, text[-3000:]
        assert "smoke test" in text and "golden predictions match" in text
        # The build log overflows its box and shows its newest line: it followed the output.
        log = panel.locator(".mlship-Build .mlship-Log")
        assert log.evaluate("(el) => el.scrollHeight > el.clientHeight + 20"), "the build log did not overflow"
        assert log.evaluate("(el) => el.scrollHeight - el.scrollTop - el.clientHeight <= 2")
        screenshot(page, screenshots_dir, "build-done-light")


def test_insert_as_cell_writes_the_same_ship_cell(lab, page):
    write_notebook(lab.root / "insert.ipynb", TRAIN)
    open_notebook(page, lab, "insert.ipynb")
    run_all(page, 1)
    panel = open_panel(page)
    panel.locator("#mlship-model option[value='clf']").wait_for(state="attached")
    panel.locator("#mlship-name").fill("insert-me")
    panel.get_by_role("button", name="Insert as cell").click()
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-editor")
    cells.nth(1).wait_for()
    assert cells.nth(1).inner_text().strip() == "%ship insert-me --sample X_test --model clf --method predict"


def test_the_panel_explains_a_busy_kernel_and_a_missing_one(lab, page, screenshots_dir):
    write_notebook(lab.root / "idle.ipynb", TRAIN, "import time\ntime.sleep(60)")
    open_notebook(page, lab, "idle.ipynb")
    run_all(page, 1, idle=False)  # the first cell ran; the second keeps the kernel busy

    panel = open_panel(page)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='busy']").wait_for()
    panel.get_by_role("button", name="Export").click()
    alert = panel.locator(".mlship-Message.mlship-mod-error").first
    alert.wait_for()
    assert "The kernel is busy" in alert.inner_text()

    menu(page, "Kernel", "Shut Down Kernel")
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName", has_text="No Kernel").wait_for()
    panel.get_by_role("button", name="Export").click()
    alert.wait_for()
    page.wait_for_function(
        "() => document.querySelector('#mlship-panel .mlship-Message.mlship-mod-error')?.textContent.includes('no running kernel')")
    assert "This notebook has no running kernel" in alert.inner_text()
    screenshot(page, screenshots_dir, "no-kernel-light")


def test_a_refusal_and_a_cancel_are_reported_in_the_panel(lab, page, screenshots_dir):
    broken = 'class Broken:\n    def predict(self, x):\n        raise ValueError("not trained")\n\nbroken = Broken()'
    write_notebook(lab.root / "refuse.ipynb", TRAIN, broken)
    open_notebook(page, lab, "refuse.ipynb")
    run_all(page, 2)
    panel = open_panel(page)
    panel.locator("#mlship-model option[value='broken']").wait_for(state="attached")

    # Capture refuses a model that raises on the sample: the panel shows the magic's one sentence.
    panel.locator("#mlship-model").select_option("broken")
    panel.locator("#mlship-sample").select_option("X")
    panel.get_by_role("button", name="Export").click()
    refusal = panel.locator(".mlship-Run .mlship-Message.mlship-mod-error")
    refusal.wait_for(timeout=120_000)
    assert "not trained" in refusal.inner_text()
    assert not (lab.root / "services" / "refuse").exists()
    screenshot(page, screenshots_dir, "refusal-light")

    # Cancel interrupts the kernel while verify runs; nothing is left behind.
    panel.locator("#mlship-model").select_option("clf")
    panel.get_by_role("button", name="Export").click()
    panel.locator(".mlship-Step.mlship-mod-running", has_text="Verify").wait_for(timeout=120_000)
    cancel = panel.get_by_role("button", name="Cancel")
    assert icon_centred(cancel)
    cancel.click()
    cancelled = panel.locator(".mlship-Run .mlship-Message.mlship-mod-error")
    cancelled.wait_for(timeout=120_000)
    assert cancelled.inner_text().startswith("Cancelled")
    wait_idle(page)
    assert not (lab.root / "services" / "refuse").exists()


def words(locator) -> str:
    """The element's text on one line, words separated by single spaces."""
    return " ".join(locator.inner_text().split())


def alias_target(lab, name: str, alias: str) -> dict:
    """The alias's current event as the registry stores it: the highest SEQ file (docs/registry.md)."""
    events = sorted((lab.registry / name / "aliases" / alias).glob("*.json"))
    return json.loads(events[-1].read_text())


def test_push_promote_and_roll_back_from_the_panel(lab, page, screenshots_dir):
    write_notebook(lab.root / "reg.ipynb", TRAIN)
    open_notebook(page, lab, "reg.ipynb")
    run_all(page, 1)
    panel = open_panel(page)
    panel.locator("#mlship-model option[value='clf']").wait_for(state="attached")
    panel.get_by_role("checkbox").uncheck()  # verify is not what this test is about
    registry = panel.locator("section[aria-label='Registry']")
    registry.get_by_text("No version of this notebook's models is in the registry yet").wait_for()

    # Two exports of one project with different samples, each pushed: versions 1 and 2 of "reg". The
    # second exported again unchanged is the version it already is: nothing is pushed.
    for version, sample, said in (("1", "X_test", "Pushed to the registry as version 1."),
                                  ("2", "X", "Pushed to the registry as version 2."),
                                  ("2", "X", "Already in the registry as version 2: the same files, nothing was pushed.")):
        panel.locator("#mlship-sample").select_option(sample)
        panel.get_by_role("button", name="Export").click()
        result = panel.locator(".mlship-Result", has_text="Exported (not verified)")
        result.wait_for(timeout=120_000)
        result.get_by_role("button", name="Push", exact=True).click()
        outcome = result.locator(".mlship-PushOutcome")
        outcome.wait_for()
        assert outcome.inner_text() == said, outcome.inner_text()
        registry.get_by_role("button", name=f"Promote reg v{version}").wait_for()
    assert json.loads((lab.registry / "reg" / "versions" / "2" / "version.json").read_text())["parent"] == "1"

    # Promote v1, then v2, to production; the alias row follows, and so does the registry on disk.
    for version in ("1", "2"):
        registry.get_by_role("button", name=f"Promote reg v{version}").click()
        form = registry.get_by_role("form", name=f"Promote reg v{version} to an alias")
        assert form.get_by_label("Alias").input_value() == "production"
        form.get_by_role("button", name="Promote", exact=True).click()
        registry.get_by_text(f"production of reg now points to version {version}.").wait_for()
        assert "production → v" + version in words(registry.locator(".mlship-Alias"))
        assert alias_target(lab, "reg", "production")["version"] == version
    screenshot(page, screenshots_dir, "registry-light")

    # Roll back: production goes back to v1, and then has nothing earlier to go back to.
    rollback = registry.get_by_role("button", name="Roll back production of reg")
    rollback.click()
    registry.get_by_text("production of reg rolled back to version 1.").wait_for()
    event = alias_target(lab, "reg", "production")
    assert (event["version"], event["action"]) == ("1", "rollback")
    assert "production → v1" in words(registry.locator(".mlship-Alias"))
    assert rollback.is_disabled()

    # A refusal is the server's one sentence: pushing an export whose folder was deleted.
    shutil.rmtree(lab.root / "services" / "reg")
    history = panel.locator(".mlship-HistoryItem", has_text="reg")
    history.first.get_by_role("button", name="Push reg v1 to the registry").click()
    refusal = history.first.locator(".mlship-PushOutcome.mlship-mod-error")
    refusal.wait_for()
    assert "the folder does not exist" in refusal.inner_text()
    assert sorted(p.name for p in (lab.registry / "reg" / "versions").iterdir()) == ["1", "2"]  # nothing written
    use_theme(page, "JupyterLab Dark")
    screenshot(page, screenshots_dir, "registry-dark")
    use_theme(page, "JupyterLab Light")
