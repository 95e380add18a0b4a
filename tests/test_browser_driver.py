"""The headless-Chromium driver (tests/browser.py) against the real browser.

Report tests will trust what the driver says about a page (images loaded, no overlap, no
request leaves the machine), so each of those claims is checked here on a hand-written page
where the right answer is known, including the pages where it must say something is wrong.
"""

from __future__ import annotations

import base64
import http.server
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.browser import (
    ARTIFACTS_ENV,
    BROWSER_ENV,
    VIEWPORT,
    Browser,
    BrowserError,
    Rect,
    artifacts_dir,
    find_browser,
)

pytestmark = pytest.mark.browser

STRICT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' width='120' height='80'>"
    "<rect width='120' height='80' fill='teal'/></svg>"
)
SVG_URL = "data:image/svg+xml;base64," + base64.b64encode(SVG.encode()).decode()
# A PNG data URL whose bytes are not a PNG: the browser completes it but decodes nothing.
BROKEN_URL = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser for the module (starting one costs ~0.3 s); each page gets its own context."""
    if find_browser() is None:
        pytest.fail(
            "no Chromium: run `bash scripts/ensure-browser.sh` (or `make test-browser`) or "
            f"install chromium-headless-shell; {BROWSER_ENV} names another browser"
        )
    with Browser() as started:
        yield started


def write_page(folder: Path, body: str, *, csp: str | None = None, name: str = "page.html") -> Path:
    """An HTML file with this body and, if given, a CSP <meta> tag."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">' if csp else ""
    path = folder / name
    path.write_text(
        f'<!doctype html><html><head><meta charset="utf-8">{meta}<title>t</title></head>'
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


def figure(name: str, src: str, *, caption: str = "", style: str = "") -> str:
    """A <figure data-plot=name> holding one <img> with alt text and a caption."""
    return (
        f'<figure data-plot="{name}" style="{style}"><img src="{src}" alt="{name} plot">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which must come first)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed child awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_self_contained_figures_under_a_strict_csp_load_without_requests(
    browser: Browser, tmp_path: Path
) -> None:
    """(a) Two data: SVG images under a strict CSP: both decoded, apart, nothing requested."""
    page = write_page(
        tmp_path,
        figure("loss", SVG_URL, caption="Training loss")
        + figure("residuals", SVG_URL, caption="Residuals"),
        csp=STRICT_CSP,
    )
    report = browser.inspect(page)
    assert [f.name for f in report.figures] == ["loss", "residuals"]
    for fig in report.figures:
        assert fig.image == "img"
        assert fig.complete
        assert (fig.natural_width, fig.natural_height) == (120, 80)
        assert fig.shows_image
        assert fig.alt == f"{fig.name} plot"
    assert report.figure("loss").caption == "Training loss"
    assert report.overlaps() == []
    assert report.requests == []
    assert report.console_errors == []
    assert report.csp_violations == []
    assert report.csp == STRICT_CSP
    assert report.url == page.resolve().as_uri()


def test_a_broken_data_image_is_complete_with_natural_width_zero(
    browser: Browser, tmp_path: Path
) -> None:
    """(b) An image that cannot be decoded: `complete` alone would call it fine."""
    page = write_page(
        tmp_path, figure("good", SVG_URL) + figure("broken", BROKEN_URL), csp=STRICT_CSP
    )
    report = browser.inspect(page)
    broken = report.figure("broken")
    assert broken.complete
    assert broken.natural_width == 0
    assert not broken.shows_image
    assert report.figure("good").shows_image
    assert report.requests == []


def test_overlapping_figures_are_found_in_page_coordinates(
    browser: Browser, tmp_path: Path
) -> None:
    """(c) Absolutely placed figures: one pair overlaps; touching edges do not count.

    The page scrolls itself down first, so the rects must include the scroll offset.
    """
    place = "position:absolute;margin:0;width:200px;height:150px;"
    page = write_page(
        tmp_path,
        '<div style="height:3000px"></div>'
        + figure("a", SVG_URL, style=place + "left:10px;top:1000px")
        + figure("b", SVG_URL, style=place + "left:160px;top:1100px")
        + figure("c", SVG_URL, style=place + "left:400px;top:1000px")
        + figure("d", SVG_URL, style=place + "left:600px;top:1000px")  # touches c's right edge
        + "<script>window.scrollTo(0, 700);"
        "document.querySelector('[data-plot=a] figcaption').textContent ="
        " 'scrolled ' + window.scrollY;</script>",
    )
    report = browser.inspect(page)
    assert report.figure("a").caption == "scrolled 700"
    assert report.figure("a").rect == Rect(10, 1000, 200, 150)
    assert report.figure("b").rect == Rect(160, 1100, 200, 150)
    assert report.overlaps() == [("a", "b")]


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback: its base URL (host `localhost`) and the paths asked for.

    `localhost`, not 127.0.0.1: the host-resolver rule spares that name only (it maps IP
    literals to nothing too), so the request is stopped by the offline emulation or not at all.
    """
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_requests_are_recorded_and_none_reaches_a_network(
    browser: Browser, tmp_path: Path, loopback_server: tuple[str, list[str]]
) -> None:
    """(d) A page without CSP that fetches from outside: every URL recorded, all failed offline.

    The loopback server proves the offline part: the host-resolver rule spares localhost, so
    only the per-page network emulation keeps its request from arriving.
    """
    base, hits = loopback_server
    wanted = {"http://example.invalid/x.png", "https://cdn.example.com/a.css", f"{base}/leak.png"}
    page = write_page(
        tmp_path,
        '<link rel="stylesheet" href="https://cdn.example.com/a.css">'
        + figure("remote", "http://example.invalid/x.png")
        + figure("local", f"{base}/leak.png"),
    )
    report = browser.inspect(page)
    assert hits == [], "a request reached the loopback server: the page was not offline"
    assert report.csp is None
    assert set(report.requests) == wanted
    assert report.failed_requests == dict.fromkeys(wanted, "net::ERR_INTERNET_DISCONNECTED")
    assert not report.figure("remote").shows_image


def test_csp_violations_console_errors_and_exceptions_are_reported(
    browser: Browser, tmp_path: Path
) -> None:
    """What a strict CSP blocks is a violation (and a request the CSP refused); page errors too."""
    page = write_page(
        tmp_path,
        figure("blocked", "http://example.invalid/y.png"),
        csp=STRICT_CSP,
    )
    report = browser.inspect(page)
    assert report.csp_violations == [
        {"directive": "img-src", "blocked": "http://example.invalid/y.png", "source": ""}
    ]
    assert report.failed_requests == {"http://example.invalid/y.png": "csp"}
    assert any("img-src" in e for e in report.console_errors)

    scripted = write_page(
        tmp_path,
        "<script>console.error('plot failed'); throw new Error('kaput');</script>",
        name="scripted.html",
    )
    errors = browser.inspect(scripted).console_errors
    assert "plot failed" in errors
    assert any("kaput" in e for e in errors)


def test_inline_svg_counts_as_an_image_and_a_bare_figure_does_not(
    browser: Browser, tmp_path: Path
) -> None:
    """An inline <svg> has nothing to load (shown at its size); a figure without one is empty."""
    page = write_page(
        tmp_path,
        f'<figure data-plot="inline">{SVG}</figure>'
        '<figure data-plot="empty"><figcaption>nothing</figcaption></figure>',
        csp=STRICT_CSP,
    )
    report = browser.inspect(page)
    inline, empty = report.figure("inline"), report.figure("empty")
    assert (inline.image, inline.natural_width, inline.natural_height) == ("svg", 120, 80)
    assert inline.shows_image
    assert (empty.image, empty.shows_image, empty.caption) == (None, False, "nothing")


def test_screenshot_covers_the_whole_tall_page(browser: Browser, tmp_path: Path) -> None:
    """(e) The PNG is the full page, taller than the viewport (kept in the artifacts folder)."""
    page = write_page(
        tmp_path,
        '<div style="height:3000px;background:linear-gradient(teal,orange)"></div>',
        csp=STRICT_CSP,
    )
    out = artifacts_dir() / "browser-driver-tall-page.png"
    out.unlink(missing_ok=True)
    assert browser.screenshot(page, out) == out
    width, height = png_size(out.read_bytes())
    assert width == VIEWPORT[0]
    assert height >= 3000 > VIEWPORT[1]


def test_a_browser_that_dies_at_once_is_an_error_with_its_stderr(tmp_path: Path) -> None:
    """A browser that exits is reported with its status and what it printed, not a hang."""
    fake = tmp_path / "fake-browser"
    fake.write_text("#!/bin/sh\necho 'cannot open display, or so' >&2\nexit 3\n")
    fake.chmod(0o755)
    began = time.monotonic()
    with pytest.raises(BrowserError, match=r"status 3(.|\n)*cannot open display"):
        Browser(str(fake), start_timeout=20).start()
    assert time.monotonic() - began < 10


def test_a_browser_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    """A silent browser: the start times out, and its whole process group is gone after."""
    pid_file = tmp_path / "pid"
    fake = tmp_path / "silent-browser"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pid_file}\nwait\n")
    fake.chmod(0o755)
    began = time.monotonic()
    with pytest.raises(BrowserError, match="timed out"):
        Browser(str(fake), start_timeout=1).start()
    assert time.monotonic() - began < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child), "the browser's child outlived it"


def test_a_browser_killed_mid_session_fails_the_next_page_clearly(tmp_path: Path) -> None:
    """The next command sees the browser's end of the pipe close and says it died."""
    page = write_page(tmp_path, figure("x", SVG_URL))
    with Browser() as doomed:
        assert doomed.inspect(page).figure("x").shows_image
        assert doomed.pid is not None
        os.killpg(doomed.pid, signal.SIGKILL)
        with pytest.raises(BrowserError, match=r"died|could not send"):
            doomed.inspect(page)


def test_find_browser_and_artifacts_dir_honour_their_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A named browser is used or refused (never another one); the artifacts folder is made."""
    found = find_browser()
    assert found is not None
    monkeypatch.setenv(BROWSER_ENV, found)
    assert find_browser() == found
    monkeypatch.setenv(BROWSER_ENV, "no-such-browser-anywhere")
    with pytest.raises(BrowserError, match="no-such-browser-anywhere"):
        find_browser()
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "arts"))
    assert artifacts_dir() == tmp_path / "arts"
    assert (tmp_path / "arts").is_dir()
