"""The reports in a real browser: Chromium, headless, network off, opens each task's report.

For every plot the task's report must have: the figure exists, its image loaded (``complete``
and ``naturalWidth > 0``), it has a caption and alt text, and no two figures overlap. The page
makes no network request and breaks no rule of its Content-Security-Policy. A full-page
screenshot of each is kept in the CI artifacts folder (``tests.browser.artifacts_dir``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.browser import Browser, artifacts_dir
from tests.conftest import invoke_isolated
from tests.report.builds import EXPECTED_PLOTS, train

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The HTML report of a cross-validated build of each task."""
    root = tmp_path_factory.mktemp("browser")
    out = {}
    for task in EXPECTED_PLOTS:
        bid = train(root, task)
        out[task] = root / f"{task}.html"
        done = invoke_isolated("report", bid, "-o", str(out[task]), root=root)
        assert done.exit_code == 0, done.output
    return out


@pytest.mark.parametrize("task", list(EXPECTED_PLOTS))
def test_every_plot_of_the_report_shows_in_chromium_offline(
    reports: dict[str, Path], task: str
) -> None:
    with Browser() as browser:
        page = browser.inspect(reports[task])
        browser.screenshot(reports[task], artifacts_dir() / f"report-{task}.png")
    assert [f.name for f in page.figures] == EXPECTED_PLOTS[task]
    for figure in page.figures:
        assert figure.image == "img", figure
        assert figure.shows_image, figure  # complete and naturalWidth > 0
        assert figure.natural_width >= 300 and figure.rect.width >= 300, figure
        assert figure.caption and len(figure.caption) > 20, figure
        assert figure.alt and len(figure.alt) > 20, figure
    assert page.overlaps() == []
    external = [u for u in page.requests if not u.startswith(("data:", "file:"))]
    assert external == [] and page.failed_requests == {}
    assert page.csp_violations == [] and page.console_errors == []
    assert page.csp is not None and "default-src 'none'" in page.csp
    assert (artifacts_dir() / f"report-{task}.png").stat().st_size > 10_000
