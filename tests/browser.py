"""A small driver for a real headless Chromium, so that tests can check HTML reports in a browser.

Why not Playwright or Selenium: both download or need their own browser and driver, which CI
cannot fetch (no internet); Debian's ``chromium-headless-shell`` is an apt package. This module
speaks the Chrome DevTools Protocol (CDP) itself over ``--remote-debugging-pipe``: the browser
reads NUL-terminated JSON commands from its fd 3 and writes NUL-terminated responses and events
to its fd 4. No port is opened, so nothing else on the machine can reach the browser, and no
websocket library is needed.

Every page is opened with the network off for real: host names resolve to nothing (a launch
flag) and, per page, CDP's network emulation is offline, so that a report that would fetch
anything from the internet is caught (each requested URL is recorded) instead of silently
working on a developer's machine and failing in an air-gapped one.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

REPO = Path(__file__).resolve().parents[1]

# Names tried on PATH, best first: the headless shell is the small package made for this.
BROWSER_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
BROWSER_ENV = "PIPELINE_TEST_BROWSER"
ARTIFACTS_ENV = "PIPELINE_TEST_ARTIFACTS"

# tests/conftest.py's autouse fixture deletes every PIPELINE_* variable before each test, so a
# test would never see these two: the values at import (collection time) are kept as a fallback.
_ENV_AT_IMPORT = {name: os.environ.get(name) for name in (BROWSER_ENV, ARTIFACTS_ENV)}

# The CSS viewport of every page: fixed so that layouts (and so overlaps and screenshots) do not
# depend on the browser's default window size.
VIEWPORT = (1280, 800)

# Seconds: one CDP command; the browser's start (first launch on a cold disk is the slowest);
# a page's load event.
COMMAND_TIMEOUT = 15.0
START_TIMEOUT = 30.0
LOAD_TIMEOUT = 20.0

# Injected before any page script: records Content-Security-Policy violations, which the page
# itself cannot be trusted (or allowed, under its own CSP) to report.
_RECORD_CSP_VIOLATIONS = """
window.__pipelineCspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__pipelineCspViolations.push({
    directive: e.violatedDirective || e.effectiveDirective || '',
    blocked: e.blockedURI || '',
    source: e.sourceFile || '',
  });
});
"""

# Evaluated once the page has loaded: what the page shows, in page coordinates. Two timer turns
# first, so that violation events queued during loading have been dispatched.
_DESCRIBE_PAGE = """
(async () => {
  for (let i = 0; i < 2; i++) await new Promise((done) => setTimeout(done, 0));
  const rectOf = (el) => {
    const r = el.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width,
            height: r.height};
  };
  const figures = Array.from(document.querySelectorAll('figure[data-plot]')).map((fig) => {
    const img = fig.querySelector('img');
    const svg = img ? null : fig.querySelector('svg');
    const caption = fig.querySelector('figcaption');
    return {
      name: fig.dataset.plot,
      image: img ? 'img' : (svg ? 'svg' : null),
      complete: img ? img.complete : svg !== null,
      natural_width: img ? img.naturalWidth : (svg ? Math.round(rectOf(svg).width) : 0),
      natural_height: img ? img.naturalHeight : (svg ? Math.round(rectOf(svg).height) : 0),
      rect: rectOf(fig),
      caption: caption ? caption.textContent.trim() : null,
      alt: img ? img.getAttribute('alt') : null,
    };
  });
  const csp = Array.from(document.querySelectorAll('meta[http-equiv]'))
    .filter((m) => m.httpEquiv.toLowerCase() === 'content-security-policy')
    .map((m) => m.content);
  return {
    figures,
    csp: csp.length ? csp.join('; ') : null,
    violations: window.__pipelineCspViolations || [],
    size: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
  };
})()
"""


class BrowserError(RuntimeError):
    """The browser failed: it would not start, died, timed out, or a CDP command failed."""


def _env(name: str) -> str | None:
    """The variable now, else its value when this module was imported (see _ENV_AT_IMPORT)."""
    return os.environ.get(name) or _ENV_AT_IMPORT.get(name) or None


def find_browser() -> str | None:
    """The browser to drive: $PIPELINE_TEST_BROWSER, else the first of BROWSER_NAMES on PATH.

    A set variable that names nothing runnable is an error rather than a fallback, so that a
    typo does not quietly test another browser.
    """
    chosen = _env(BROWSER_ENV)
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise BrowserError(f"{BROWSER_ENV}={chosen!r} is not an executable")
        return found
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir() -> Path:
    """Where tests write what a person should look at after CI (screenshots), created.

    $PIPELINE_TEST_ARTIFACTS, else ``<repo>/ci-artifacts`` (ignored by git; CI keeps it).
    """
    folder = Path(_env(ARTIFACTS_ENV) or REPO / "ci-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Rect:
    """A box in page coordinates (CSS pixels from the document's top left, scroll included)."""

    x: float
    y: float
    width: float
    height: float

    def intersects(self, other: Rect) -> bool:
        """Whether the two boxes share a positive area (touching edges do not count)."""
        w = min(self.x + self.width, other.x + other.width) - max(self.x, other.x)
        h = min(self.y + self.height, other.y + other.height) - max(self.y, other.y)
        return w > 0 and h > 0


@dataclass(frozen=True)
class Figure:
    """One ``<figure data-plot=...>`` as the browser laid it out.

    ``image`` is "img", "svg" (inline) or None (no image at all). For an inline SVG,
    ``complete`` is True and the natural size is its rendered size: there is nothing to load.
    """

    name: str
    image: str | None
    complete: bool
    natural_width: int
    natural_height: int
    rect: Rect
    caption: str | None
    alt: str | None

    @property
    def shows_image(self) -> bool:
        """An image is there, loaded and decoded: a broken one is complete with width 0."""
        return self.image is not None and self.complete and self.natural_width > 0


@dataclass(frozen=True)
class PageReport:
    """What one page did in the browser: its figures, requests, errors and CSP."""

    url: str
    figures: list[Figure]
    # URLs the page asked for, besides itself and data: URLs, in order: with a self-contained
    # report this is empty. None of them reached a network (offline), see failed_requests.
    requests: list[str]
    # URL -> the browser's error for each request that failed (offline: net::ERR_...).
    failed_requests: dict[str, str]
    # Console errors, uncaught exceptions and the browser's own error log entries.
    console_errors: list[str]
    # Content-Security-Policy violations seen by the page: {directive, blocked, source}.
    csp_violations: list[dict[str, str]]
    # The content of the page's CSP <meta> tag(s), or None without one.
    csp: str | None
    # The document's scroll size in CSS pixels.
    size: tuple[int, int] = field(default=(0, 0))

    def figure(self, name: str) -> Figure:
        """The figure with this data-plot name (KeyError if none)."""
        for fig in self.figures:
            if fig.name == name:
                return fig
        raise KeyError(f"no figure[data-plot={name!r}] among {[f.name for f in self.figures]}")

    def overlaps(self) -> list[tuple[str, str]]:
        """Pairs of figures (by name, in document order) whose boxes share a positive area."""
        return [
            (a.name, b.name)
            for i, a in enumerate(self.figures)
            for b in self.figures[i + 1 :]
            if a.rect.intersects(b.rect)
        ]


# Run in the child before the browser: put the pipe's ends (fds argv[1], argv[2]) at 3 and 4,
# close the originals, exec the browser (argv[3:]).
_TRAMPOLINE = """\
import os, sys
r, w = int(sys.argv[1]), int(sys.argv[2])
os.dup2(r, 3)
os.dup2(w, 4)
os.close(r)
os.close(w)
os.execv(sys.argv[3], sys.argv[3:])
"""


def _above(fd: int, lowest: int = 10) -> int:
    """A copy of fd numbered at least ``lowest`` (close-on-exec), the original closed.

    The child's ``dup2(R, 3)`` must not clobber W (nor ``dup2(W, 4)`` R), which could happen
    if either were 3 or 4 already.
    """
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class Browser:
    """A headless Chromium driven over CDP; use as a context manager (it kills what it starts).

    One browser serves many pages: each inspect() or screenshot() opens its page in a fresh
    browser context (no shared cache or storage) and closes it afterwards.
    """

    def __init__(
        self,
        executable: str | None = None,
        *,
        viewport: tuple[int, int] = VIEWPORT,
        start_timeout: float = START_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        found = executable or find_browser()
        if found is None:
            raise BrowserError(
                "no Chromium found: install chromium-headless-shell (Debian) or chromium, "
                f"or set {BROWSER_ENV}; `bash scripts/ensure-browser.sh` says what is missing"
            )
        self.executable = found
        self.viewport = viewport
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._answered = False  # whether it ever answered: only then is a polite close worth it
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._to_browser = -1
        self._from_browser = -1
        self._buffer = bytearray()
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The browser's process id (also its process group's), None when not started."""
        return None if self._proc is None else self._proc.pid

    def arguments(self, profile: str) -> list[str]:
        """The command line: headless, a throwaway profile, no GPU, no network, no extras."""
        args = [
            self.executable,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            # The network is off: every host name but localhost resolves to nothing, no proxy
            # from the environment is used, and the browser's own background traffic is off.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-breakpad",
            # /dev/shm is small in containers; the renderer uses /tmp instead.
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--force-device-scale-factor=1",
            f"--window-size={self.viewport[0]},{self.viewport[1]}",
            "--password-store=basic",
            "--use-mock-keychain",
        ]
        # The sandbox cannot start as root (CI containers); elsewhere it stays on.
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        return [*args, "about:blank"]

    def start(self) -> None:
        """Launch the browser and wait until it answers a first command."""
        if self._proc is not None:
            raise BrowserError("the browser is already started")
        try:
            self._launch()
            self.send("Browser.getVersion", timeout=self.start_timeout)
        except BaseException:
            self.close()  # nothing is left behind: no process, fd or profile folder
            raise
        self._answered = True

    def _launch(self) -> None:
        """Start the process with the CDP pipe at its fds 3 and 4."""
        self._profile = tempfile.TemporaryDirectory(
            prefix="pipeline-browser-", ignore_cleanup_errors=True
        )
        # stderr goes to a file: a pipe nobody reads could fill up and stall the browser.
        self._stderr = tempfile.TemporaryFile(prefix="pipeline-browser-stderr-")  # noqa: SIM115
        commands_read, self._to_browser = os.pipe()
        self._from_browser, events_write = os.pipe()
        commands_read, events_write = _above(commands_read), _above(events_write)
        # The browser expects the pipe at fds 3 and 4. A tiny Python moves it there and execs the
        # browser: no preexec_fn (unsafe with threads), and no `sh` (dash takes only fds 0-9).
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _TRAMPOLINE,
                    str(commands_read),
                    str(events_write),
                    *self.arguments(self._profile.name),
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=self._stderr,
                pass_fds=(commands_read, events_write),
                # Its own process group, so that close() can kill the renderers with it.
                start_new_session=True,
            )
        finally:
            # The child holds its own copies: with ours closed, the browser's exit is an EOF.
            os.close(commands_read)
            os.close(events_write)

    def close(self) -> None:
        """Ask the browser to quit, then kill its whole process group; remove its profile."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._answered and proc.poll() is None:
                try:
                    self._write({"id": self._new_id(), "method": "Browser.close"})
                    proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            # Always: renderers and helpers that outlived the browser die with its group.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                os.close(fd)
        self._to_browser = self._from_browser = -1
        self._buffer.clear()
        self._answered = False
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    # -- protocol ----------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def stderr_tail(self, lines: int = 20) -> str:
        """The end of the browser's stderr, for error messages."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, why: str, *, died: bool = False) -> BrowserError:
        """An error saying why, with the browser's exit status and the tail of its stderr.

        ``died``: its pipe closed, so it is exiting; its status is worth a short wait.
        """
        status = None
        if self._proc is not None:
            with suppress(subprocess.TimeoutExpired):
                status = self._proc.wait(timeout=2) if died else self._proc.poll()
        state = "running" if status is None else f"exited with status {status}"
        return BrowserError(
            f"{why} (browser {self.executable} {state}); its stderr ends with:\n"
            f"{self.stderr_tail() or '(nothing)'}"
        )

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next message from the browser; a BrowserError at the deadline or its exit."""
        while (end := self._buffer.find(b"\0")) < 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail("timed out waiting for the browser")
            # poll, not select: select fails on fds above 1024, which a long test run can reach.
            waiting = select.poll()
            waiting.register(self._from_browser, select.POLLIN)
            if waiting.poll(max(1, int(left * 1000))):
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise self._fail("the browser closed its pipe (it died)", died=True)
                self._buffer += chunk
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one CDP command (on a page's session if given) and return its result.

        Events that arrive meanwhile are kept, in order, for wait_for() and the page reports.
        """
        if self._proc is None:
            raise BrowserError("the browser is not started")
        ident = self._new_id()
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            self._write(message)
        except OSError as e:
            raise self._fail(f"could not send {method}: {e}", died=True) from e
        deadline = time.monotonic() + (self.command_timeout if timeout is None else timeout)
        while True:
            reply = self._read(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self._events.append(reply)

    def wait_for(
        self, method: str, *, session: str | None = None, timeout: float = LOAD_TIMEOUT
    ) -> dict[str, Any]:
        """Wait for an event (already received or coming) and return its params."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self._events[seen:]:
                if event["method"] == method and event.get("sessionId") == session:
                    params: dict[str, Any] = event.get("params", {})
                    return params
            seen = len(self._events)
            message = self._read(deadline)
            if "method" in message:
                self._events.append(message)

    def _drop_events(self, session: str) -> None:
        """Forget a closed page's events, and the browser-level ones (nothing waits for those)."""
        self._events = [e for e in self._events if e.get("sessionId") not in (session, None)]

    # -- pages -------------------------------------------------------------------------------

    @contextmanager
    def _page(self, path: Path) -> Iterator[str]:
        """Open file://path offline in a fresh context; yield its CDP session once loaded.

        The page and its context are closed afterwards; when the body failed (a dead browser,
        say), closing is best effort, so that the first error is the one reported.
        """
        url = path.resolve().as_uri()
        context: str = self.send("Target.createBrowserContext")["browserContextId"]
        opened: dict[str, str] = {}
        try:
            opened["target"] = self.send(
                "Target.createTarget", {"url": "about:blank", "browserContextId": context}
            )["targetId"]
            session: str = self.send(
                "Target.attachToTarget", {"targetId": opened["target"], "flatten": True}
            )["sessionId"]
            opened["session"] = session
            for method, params in (
                ("Page.enable", {}),
                ("Runtime.enable", {}),
                ("Log.enable", {}),
                # Requests are recorded (requestWillBeSent) and none leaves the machine: the
                # resolver rule alone would let localhost through, offline emulation does not.
                ("Network.enable", {}),
                (
                    "Network.emulateNetworkConditions",
                    {
                        "offline": True,
                        "latency": 0,
                        "downloadThroughput": -1,
                        "uploadThroughput": -1,
                    },
                ),
                ("Network.setCacheDisabled", {"cacheDisabled": True}),
                (
                    "Emulation.setDeviceMetricsOverride",
                    {
                        "width": self.viewport[0],
                        "height": self.viewport[1],
                        "deviceScaleFactor": 1,
                        "mobile": False,
                    },
                ),
                ("Page.addScriptToEvaluateOnNewDocument", {"source": _RECORD_CSP_VIOLATIONS}),
            ):
                self.send(method, params, session=session)
            navigated = self.send("Page.navigate", {"url": url}, session=session)
            if navigated.get("errorText"):
                raise BrowserError(f"could not open {url}: {navigated['errorText']}")
            self.wait_for("Page.loadEventFired", session=session)
            yield session
        except BaseException:
            with suppress(BrowserError):
                self._close_page(context, opened)
            raise
        self._close_page(context, opened)

    def _close_page(self, context: str, opened: dict[str, str]) -> None:
        """Close what _page opened and drop its session's events."""
        if "session" in opened:
            self._drop_events(opened["session"])
        if "target" in opened:
            self.send("Target.closeTarget", {"targetId": opened["target"]})
        self.send("Target.disposeBrowserContext", {"browserContextId": context})

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JS expression in a page (promises awaited); a page error raises."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"the page's script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def inspect(self, path: Path) -> PageReport:
        """Open an HTML file offline and report its figures, requests, errors and CSP."""
        url = path.resolve().as_uri()
        with self._page(path) as session:
            described = self.evaluate(session, _DESCRIBE_PAGE)
            events = list(self._events)  # this page's events so far (the page closes next)
        events = [e for e in events if e.get("sessionId") == session]
        return _report(url, described, events)

    def screenshot(self, path: Path, out: Path) -> Path:
        """A PNG of the whole page (not just the viewport) of an HTML file, written to out."""
        with self._page(path) as session:
            metrics = self.send("Page.getLayoutMetrics", session=session)
            size = metrics["cssContentSize"]
            width = max(1, int(size["width"] + 0.5))
            height = max(1, int(size["height"] + 0.5))
            shot = self.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                },
                session=session,
                timeout=60,
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return out


def _report(url: str, described: dict[str, Any], events: Sequence[dict[str, Any]]) -> PageReport:
    """A PageReport from the page script's result and the page session's CDP events."""
    requests: list[str] = []
    failed: dict[str, str] = {}
    urls_by_id: dict[str, str] = {}
    errors: list[str] = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            requested = params["request"]["url"]
            urls_by_id[params["requestId"]] = requested
            if requested != url and not requested.startswith("data:"):
                requests.append(requested)
        elif method == "Network.loadingFailed":
            failed_url = urls_by_id.get(params["requestId"], params["requestId"])
            failed[failed_url] = params.get("blockedReason") or params.get("errorText", "")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(
                " ".join(
                    str(arg.get("value", arg.get("description", ""))) for arg in params["args"]
                )
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            errors.append(f"{entry['source']}: {entry['text']}")
    figures = [
        Figure(
            name=f["name"],
            image=f["image"],
            complete=bool(f["complete"]),
            natural_width=int(f["natural_width"]),
            natural_height=int(f["natural_height"]),
            rect=Rect(**f["rect"]),
            caption=f["caption"],
            alt=f["alt"],
        )
        for f in described["figures"]
    ]
    return PageReport(
        url=url,
        figures=figures,
        requests=requests,
        failed_requests={u: e for u, e in failed.items() if u != url and not u.startswith("data:")},
        console_errors=errors,
        csp_violations=[{k: str(v) for k, v in item.items()} for item in described["violations"]],
        csp=described["csp"],
        size=(int(described["size"][0]), int(described["size"][1])),
    )
