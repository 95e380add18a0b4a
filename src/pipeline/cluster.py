"""Where distributed work runs: a Ray cluster named by RAY_ADDRESS, or a private local runtime.

``session`` is the one entry point, given ``RAY_ADDRESS`` as the settings read it. Unset, it
starts Ray inside this process's machine (its own temporary folder, no dashboard, no usage
report, no auth token) and stops it on exit; set, it checks that the address answers, connects,
and only disconnects on exit. Ray is imported inside ``session``: ``pipeline --help`` never
loads it, and a missing Ray is a ``ConfigError`` that says how to install it. Nothing here
writes to stdout, which carries the event stream.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import log, scratch, signals
from pipeline.errors import ConfigError, SourceError
from pipeline.ray_probe import first_line, probe, unreachable

# Ray puts Unix sockets at <temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store,
# and a socket path has at most 107 bytes: that leaves 43 for the temp dir itself.
_MAX_TEMP_DIR = 43
_PREFIX = "pipeline-ray-"  # mkdtemp adds 8 characters


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a session is connected to."""

    address: str | None  # RAY_ADDRESS as given (secrets masked), None when embedded
    embedded: bool
    cpus: int  # total CPUs Ray reports for the cluster
    nodes: int  # alive nodes
    node_cpus: tuple[int, ...] = ()  # each alive node's CPUs

    def fits(self, each: int) -> int:
        """How many tasks of ``each`` CPUs run at once: whole ones per node, as a Ray task or
        worker never spans nodes (2 CPUs a trial on two nodes of 1 CPU waited forever)."""
        if not self.node_cpus:
            return self.cpus // each
        return sum(c // each for c in self.node_cpus)

    def largest(self) -> int:
        """The CPUs of the largest node."""
        return max(self.node_cpus, default=self.cpus)


@contextlib.contextmanager
def session(
    address: str | None,
    *,
    connect_timeout: float,
    temp_root: Path | None = None,
    cpus: int | None = None,
    kept: str = "nothing was written",
) -> Iterator[Cluster]:
    """Connect to Ray for the duration of the block; yield what the cluster offers.

    ``address`` is ``RAY_ADDRESS`` as the settings read it (``Settings.ray_address``).
    Unset or empty: a private runtime with ``cpus`` CPUs (default: this
    machine's), its temporary folder under ``temp_root`` when that path is short enough for
    Ray's sockets (else the system's), removed afterwards. ``RAY_ADDRESS`` set: ``host:port``
    and ``ray://host:port`` must accept a TCP connection within ``connect_timeout`` seconds
    (``auto`` is not probed), else ``SourceError``; ``cpus`` and ``temp_root`` are ignored.
    A cluster that stops answering while connected ends the process (see ``_Watch``); ``kept``
    says what of the work survives it.
    """
    address = (address or "").strip()
    with (
        _environment(embedded=not address),
        _session(address, connect_timeout, temp_root, cpus, kept) as c,
    ):
        yield c


@contextlib.contextmanager
def _session(
    address: str, connect_timeout: float, temp_root: Path | None, cpus: int | None, kept: str
) -> Iterator[Cluster]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "Ray is not installed: pip install 'pipeline[ray]' (make install does it)"
        ) from None
    if address:
        shown = _masked(address)
        probe(address, shown, connect_timeout)
        try:
            with _keeping_sigterm():
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            _shutdown(ray)
            raise unreachable(shown, connect_timeout, first_line(exc)) from None
        except BaseException:  # a stop (SIGTERM, Ctrl-C) while connecting
            _shutdown(ray)
            raise
        if address == "auto" and _private_runtime(ray):
            _shutdown(ray)
            raise SourceError(
                "RAY_ADDRESS=auto found no Ray cluster on this machine, only another pipeline "
                "command's private runtime, which ends with that command: start a cluster "
                "(`ray start --head`) and give its address, or unset RAY_ADDRESS to run embedded"
            )
        watch = _Watch(_gcs_of(ray, address), shown, connect_timeout, kept)
        try:
            yield _describe(ray, shown)
        finally:
            watch.stop()
            _shutdown(ray)
        return
    temp_dir = _temp_dir(temp_root)
    before = _descendants()  # this process's own children, not the runtime's: never reaped
    try:
        with _keeping_sigterm():
            ray.init(
                num_cpus=cpus or os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=True,  # Ray's own handler, on stderr, errors only
                logging_level=logging.ERROR,
                _temp_dir=str(temp_dir),
            )
        yield _describe(ray, None)
    finally:
        with signals.held(then_stop=True, second_stops=False):  # a second one broke it off
            started = _descendants(leave=before)
            _shutdown(ray)
            _reap(started)
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _environment(*, embedded: bool) -> Iterator[None]:
    """The variables Ray reads in this process while the session lasts, restored afterwards.

    Ray's C++ failure-signal handler is off (read when Ray is first imported, which
    ``_session`` does inside this block): it takes SIGTERM, which ``ray.shutdown()`` hands
    back to the system's default action, so that a SIGTERM during or after the shutdown killed
    the process with no message (its stack dumps on a crash are what is given up; Python's own
    handlers stay). Embedded, also: no usage report, and no auth token file in ~/.ray.
    """
    names = ("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")
    saved = {key: os.environ.get(key) for key in names}
    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    if embedded:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no report, and no notice about it
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray writes ~/.ray/auth_token
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _shutdown(ray: Any) -> None:
    """``ray.shutdown()``, then this process's SIGTERM and SIGINT handlers armed again.

    Ray's core worker puts the operating system's default action back for the signals it
    handled, while Python still reports the handlers it had: a SIGTERM after a session (while
    `predict --workers` renames its parts, `train --workers` writes its build) killed the process
    at once, with no message and its staging folder left behind.
    """
    ray.shutdown()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(signum)
            if handler is not None:
                signal.signal(signum, handler)


def _descendants(leave: dict[int, str] | None = None) -> dict[int, str]:
    """This process's descendants (pid: start time), from /proc; none where there is none.
    ``leave``: children (an earlier call's) left out, with everything below them."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile, or not a process's
        parents[int(stat.parent.name)] = (int(fields[1]), fields[19])
    found: dict[int, str] = {}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in parents.items():
            if ppid == parent and pid not in found and (leave or {}).get(pid) != started:
                found[pid] = started
                frontier.append(pid)
    return found


def _reap(started: dict[int, str], patience: float = 2.0) -> None:
    """Stop the processes of ``started`` (``_descendants``) still running after
    ``ray.shutdown()``: SIGTERM, then SIGKILL after ``patience`` seconds (``_session`` leaves
    out the children the process had before ``ray.init``, and theirs). A private runtime's
    dashboard and runtime-env agents are the raylet's children, not the driver's: when a stop
    cut ``ray.init`` or the run short, they outlived the command by a minute, reparented to
    init. A pid whose start time changed is another process by now, and is left alone."""
    alive = dict(started)
    for attempt in (signal.SIGTERM, signal.SIGKILL):
        alive = {p: t for p, t in alive.items() if scratch.start_time(p) == t}
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, attempt)
        deadline = time.monotonic() + patience
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = {p: t for p, t in alive.items() if scratch.start_time(p) == t}
        if not alive:
            return


@contextlib.contextmanager
def _keeping_sigterm() -> Iterator[None]:
    """Keep this process's SIGTERM handler through ``ray.init``, which installs its own (a stack
    dump, then death; during ``ray.init`` itself, ``sys.exit(15)``): a SIGTERM stays the CLI's
    clean stop (one line, exit 130)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    except SystemExit as exc:
        # Ray's handler, while ``ray.init`` runs, exits with the signal's number (15): no
        # message, and an exit code of its own. It becomes what the CLI's handler raises.
        if main and exc.code == signal.SIGTERM and callable(previous):
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


# A line of Ray's C++ log as its core worker writes it to this process's stderr:
# "[2026-12-05 03:45:46,365 E 11633 11633] core_worker.cc:2465: ...". Fatal ones ("F") stay.
# Also the messages of Ray's own processes that its driver prints, colored or not:
# "(raylet) Task MapWorker(...).submit failed. There are 2 retries remaining, ...".
_NATIVE_LINE = re.compile(
    rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWE] \d+ \d+\] \S+\.cc:\d+: "
    rb"|(\x1b\[[\d;]*m)?\((raylet|gcs_server|autoscaler|pid=\d+)[^)]*\)(\x1b\[0m)? "
)


@contextlib.contextmanager
def prints_dropped(debug: bool) -> Iterator[None]:
    """Ray's prints (a lost worker's notice, its raylet's "Task ... failed ... will be
    retried", which Ray writes to this process's stdout, late, from a thread) go nowhere, or
    to stderr when ``debug``; the events keep stdout. For the whole Ray session."""
    from pipeline import log as logging_

    if debug:
        with logging_.stdout_for_events_only():
            yield
        return
    with Path(os.devnull).open("w") as sink, logging_.stdout_for_events_only(sink):
        yield


@contextlib.contextmanager
def native_lines_dropped() -> Iterator[None]:
    """Inside the block, lines of Ray's C++ log that reach this process's stderr are dropped;
    everything else written to file descriptor 2 passes through, whole lines at a time.

    Ray's core worker writes some of them on every healthy run (Ray Data's actors with
    restarts get "has constructor arguments in the object store and max_restarts > 0",
    ray-project/ray#53727), where stderr is the user's, and the one-line error of a failed
    run. Ray's own processes keep their logs in the session's folder. For blocks that draw no
    progress bar (a partial line is held until its newline).
    """
    try:
        stderr = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # a test runner's capture: nothing to filter
        yield
        return
    sys.stderr.flush()
    kept = os.dup(stderr)
    read_end, write_end = os.pipe()
    os.dup2(write_end, stderr)
    os.close(write_end)

    def passed_on(data: bytes) -> None:
        """All of ``data`` to the real stderr; if that is gone, the pipe is still drained."""
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(kept, data) :]

    def pump() -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                passed_on(b"".join(line + b"\n" for line in lines if not _NATIVE_LINE.match(line)))
        finally:
            os.close(read_end)
        if pending and not _NATIVE_LINE.match(pending):
            passed_on(pending)

    thread = threading.Thread(target=pump, name="ray-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(kept, stderr)  # the pipe's last write end here: the pump reads to its end
        thread.join(timeout=5)  # unless a process Ray started still holds it open
        if not thread.is_alive():
            os.close(kept)


def _describe(ray: Any, address: str | None) -> Cluster:
    alive = [node for node in ray.nodes() if node.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    each = tuple(int((node.get("Resources") or {}).get("CPU", 0)) for node in alive)
    return Cluster(
        address=address, embedded=address is None, cpus=cpus, nodes=len(alive), node_cpus=each
    )


def _temp_dir(root: Path | None) -> Path:
    """A new folder for Ray's session files, short enough for the Unix sockets inside it."""
    budget = _MAX_TEMP_DIR - len(_PREFIX) - 9  # "/" + mkdtemp's 8 characters
    for base in (root, Path(tempfile.gettempdir())):
        if base is not None and len(os.fsencode(base.absolute())) <= budget:
            base.mkdir(parents=True, exist_ok=True)
            return scratch.make(_PREFIX, base.absolute())
    return scratch.make(_PREFIX, "/tmp")  # noqa: S108 (the shortest; mkdtemp: private)


# Ray's core worker ends the driver (exit 1, its own lines on stderr) once the GCS has not
# answered for this long (gcs_rpc_server_reconnect_timeout_s): a watch must speak first.
_RAY_GIVES_UP_S = 60.0


class _Watch:
    """Probe a connected cluster's GCS every second in a thread; once it has not answered for
    ``patience`` seconds (the connect timeout, within 10..45 s), end the process with the one
    line and the exit code (5) of every unreachable cluster, ``kept`` saying what survives.

    Without it, a cluster that went away mid-run (a head node lost) left the driver to Ray,
    whose core worker exits the process with code 1 after 60 s, with no ``error`` event: a
    CI job could not tell it from a bug. The exit is ``os._exit``: the work is on the lost
    cluster, and Ray's own teardown would wait for it.
    """

    def __init__(self, target: str, shown: str, patience: float, kept: str) -> None:
        self.target, self.shown, self.kept = target, shown, kept
        self.patience = min(max(patience, 10.0), _RAY_GIVES_UP_S - 15)
        self.done = threading.Event()
        # The caller's context: the error event carries its run id and stage.
        run = contextvars.copy_context().run
        self.thread = threading.Thread(target=run, args=(self._run,), name="ray-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        answered = time.monotonic()
        while not self.done.wait(1.0):
            try:
                probe(self.target, self.shown, min(5.0, self.patience), call=False)
                answered = time.monotonic()
            except SourceError:
                if time.monotonic() - answered > self.patience and not self.done.is_set():
                    _end(
                        f"the Ray cluster at RAY_ADDRESS={self.shown} stopped answering during "
                        f"the run (nothing for {self.patience:g} s): {self.kept}; start it "
                        "again, or unset RAY_ADDRESS to run embedded"
                    )

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def _end(message: str) -> None:
    """Say ``message`` as the CLI says every error (an ``error`` event in a JSON stream, and
    one ``error:`` line on stderr), then exit with ``SourceError``'s code at once."""
    message = log.mask(message)
    if log.json_events():
        log.get_logger().error(
            "error", kind=SourceError.kind, exit_code=SourceError.exit_code, message=message
        )
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(SourceError.exit_code)


def _private_runtime(ray: Any) -> bool:
    """Whether the joined Ray keeps its files in a folder ``_temp_dir`` made for an embedded
    session: Ray's ``auto`` finds any running GCS of this machine, and took such one."""
    try:
        folder = ray._private.worker._global_node.get_temp_dir_path()
    except Exception:  # a Ray without these internals: nothing to tell
        return False
    return Path(str(folder)).name.startswith(_PREFIX)


def _gcs_of(ray: Any, address: str) -> str:
    """The address to watch: the GCS this driver joined (``auto`` resolved), or a ``ray://``
    address's client server, which is all a client can reach."""
    if address.startswith("ray://"):
        return address
    try:
        return str(ray.get_runtime_context().gcs_address) or address
    except Exception:  # an older Ray without it: the address as given
        return address


def _masked(address: str) -> str:
    """The address with registered secrets, any ``user:password@`` part and credential-like
    query values (``?token=``) masked."""
    return log.redacted_uri(log.mask(address))


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (``cause`` as Ray's errors name it, ``__cause__``,
    ``__context__``), each once: Ray nests the error that says a worker died several deep."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [getattr(current, "cause", None), current.__cause__, current.__context__]


def class_names(exc: BaseException) -> set[str]:
    """The names of ``exc``'s class and its bases (Ray's error classes, without importing Ray)."""
    return {cls.__name__ for cls in type(exc).__mro__}
