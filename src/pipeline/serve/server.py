"""Run the app under uvicorn: bind first, load the release meanwhile, drain and stop on SIGTERM.

The socket is bound before the release loads, so ``/healthz`` answers within a second and
``/readyz`` turns 200 when the model is ready (a ``serve.ready`` event says how long it took).
On SIGTERM (or Ctrl-C) ``/readyz`` turns 503 at once; after ``drain_seconds`` the listening
socket closes, idle keep-alive connections are closed, requests in flight are finished (up to
``graceful_timeout``), and the process exits 0. A second signal stops at once. A release that
cannot be loaded stops the server with that error's exit code.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import socket
import time
import traceback
from types import FrameType
from typing import Any

import uvicorn

from pipeline.serve import workers
from pipeline.serve.app import Loaded, ServeState, create_app
from pipeline.serve.protocol import BoundedHeadProtocol
from pipeline.settings import ServeSettings, Settings


class _ToStructlog(logging.Handler):
    """uvicorn's own warnings and errors, as events in the JSON log stream."""

    def __init__(self, log: Any) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        cancelled = record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError)
        if cancelled or record.getMessage().rstrip().endswith("CancelledError"):
            # A second signal stops at once, cancelling the app's lifespan: starlette reports
            # that as a failed shutdown, its traceback for a message, and uvicorn logs it as
            # an error, though it is what the user asked for.
            return
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["traceback"] = "".join(traceback.format_exception(record.exc_info[1]))
        if record.levelno >= logging.ERROR:
            self.log.error("serve.uvicorn", **fields)
        else:
            self.log.warning("serve.uvicorn", **fields)


class _Server(uvicorn.Server):
    """uvicorn's server with draining, and without re-raising the signal after shutdown.

    uvicorn re-raises a captured SIGTERM once it has shut down, which kills the process with
    status 143; a server that finished every request it accepted has succeeded, so it exits 0.
    """

    def __init__(self, config: uvicorn.Config, state: ServeState, drain: float, log: Any) -> None:
        super().__init__(config)
        self.state, self.drain, self.log = state, drain, log
        self.signal: int | None = None
        self.deadline = 0.0
        self._announced = False
        self.port: int | None = None
        self.supervisor: int | None = None  # a worker's supervisor process
        self.channel: socket.socket | None = None  # a worker's: its connections come here
        self._connecting: set[asyncio.Task[None]] = set()  # referenced until done

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only (writing a log line here could re-enter stdout).
        if self.signal is None:
            self.signal = sig
            self.state.draining = True
            self.deadline = time.monotonic() + self.drain
            if self.drain <= 0:
                self.should_exit = True
        else:  # a second signal: stop now, without waiting for requests in flight
            self.should_exit = True
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.supervisor is not None and os.getppid() != self.supervisor and not self.signal:
            # The supervisor is gone (killed with SIGKILL): a worker must not outlive it.
            self.handle_exit(signal.SIGTERM, None)
        if self.signal is not None and not self._announced:
            self._announced = True
            self.log.info(
                "serve.draining",
                signal=signal.Signals(self.signal).name,
                drain_seconds=self.drain,
                in_flight=self.state.started - self.state.completed,
            )
        if self.signal is not None and time.monotonic() >= self.deadline:
            self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        if self.channel is None:
            await super().startup(sockets)
            if self.started:
                self.port = self.servers[0].sockets[0].getsockname()[1]
        else:  # a worker: no listening socket; the supervisor hands it accepted connections
            await super().startup([])
            if self.started:
                loop = asyncio.get_running_loop()
                protocol_class: Any = self.config.http_protocol_class  # its own keywords
                protocol = functools.partial(
                    protocol_class,
                    config=self.config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                )  # what uvicorn makes for each connection it accepts
                self.channel.setblocking(False)
                loop.add_reader(self.channel.fileno(), self._take, loop, protocol)
        if self.started:
            self.log.info("serve.listening", host=self.config.host, port=self.port)

    def _take(self, loop: asyncio.AbstractEventLoop, protocol: Any) -> None:
        """Serve the connections waiting in the channel, as uvicorn serves those it accepts."""
        assert self.channel is not None
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, 16, 64)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the supervisor is gone: on_tick stops this worker
                loop.remove_reader(self.channel.fileno())
                return
            for fd in fds:
                task = loop.create_task(_connect(loop, protocol, socket.socket(fileno=fd)))
                self._connecting.add(task)
                task.add_done_callback(self._connecting.discard)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self.channel is not None:
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets)


async def _connect(loop: asyncio.AbstractEventLoop, protocol: Any, conn: socket.socket) -> None:
    """Serve an accepted connection (one whose client already left is just closed)."""
    try:
        conn.setblocking(False)
        await loop.connect_accepted_socket(protocol, conn)
    except OSError:
        conn.close()


def connection_limit(setting: int) -> int:
    """Connections held at once: ``setting``, or the open-file limit less 64 (for the files,
    sockets and pipes the process holds itself). Beyond it uvicorn answers 503 and closes the
    connection, so a flood of stalled clients cannot use up the file descriptors that probes
    and real clients need."""
    if setting:
        return setting
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft - 64)


def serve(settings: Settings, release: str | None, package: str | None) -> None:
    """Serve ``release`` (or ``package``) until SIGTERM; raise the load error if loading fails.

    With more than one worker (``PIPELINE_SERVE__WORKERS``; 0 is one per available core), this
    process binds the socket and supervises that many worker processes (``serve.workers``).
    """
    context = workers.worker_context()
    count = settings.serve.workers or max(1, len(os.sched_getaffinity(0)))
    if context is None:
        _check_address(settings.serve.host, settings.serve.port)
    if context is None and count > 1:
        _supervise(settings, release, package, count)
    else:
        _serve_one(settings, release, package, context)


def _check_address(host: str, port: int) -> None:
    """A ``ConfigError`` naming why ``host:port`` cannot be listened on (a host that does not
    resolve, a port in use or below 1024 without the right), before uvicorn logs its own
    line and exits."""
    from pipeline.errors import ConfigError

    fix = "set PORT or PIPELINE_SERVE__PORT (--port) to another port"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses it
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: the host does not resolve ({exc}): set "
            "PIPELINE_SERVE__HOST (--host) to an address of this machine, 0.0.0.0 for all"
        ) from None
    _, kind, proto, _, address = infos[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            fix = "set PIPELINE_SERVE__HOST (--host) to an address of this machine"
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; {fix}") from None
    finally:
        probe.close()


def _supervise(settings: Settings, release: str | None, package: str | None, count: int) -> None:
    from pipeline import log as logging_
    from pipeline.errors import ConfigError

    log = logging_.get_logger()
    conf = settings.serve
    # A mistake in the model's reference is said once, here, not by every worker.
    from pipeline import predict

    predict.check_reference(*_model(settings, release, package))
    try:
        # log_config=None: uvicorn's own console logging is not set up, so its "Uvicorn
        # running on ..." line stays off stderr (serve.listening says it, as an event).
        bind = uvicorn.Config(app="unused", host=conf.host, port=conf.port, log_config=None)
        sock = bind.bind_socket()
    except SystemExit:  # uvicorn logged the reason
        raise ConfigError(
            f"cannot listen on {conf.host}:{conf.port}: the address is in use or not allowed; "
            "set PORT or PIPELINE_SERVE__PORT to another port"
        ) from None
    # Connections queue from now on; the workers accept them once they have started.
    sock.listen(2048)
    log.info("serve.listening", host=conf.host, port=sock.getsockname()[1], workers=count)
    args = ["--release", release] if release else ["--package", str(package)] if package else []
    signals: list[int] = []
    code = workers.supervise(count, sock, args, log, signals.append, conf.drain_seconds)
    sock.close()
    log.info(
        "serve.workers_stopped",
        workers=count,
        signal=signal.Signals(signals[0]).name if signals else None,
        exit_code=code,
    )
    if code:
        import typer

        raise typer.Exit(code)  # the worker said why on stderr


def _serve_one(
    settings: Settings,
    release: str | None,
    package: str | None,
    context: workers.WorkerContext | None,
) -> None:
    """One server process: on its own socket, or a worker serving the connections its
    supervisor hands it."""
    from pipeline import log as logging_

    t0 = time.perf_counter()
    # A logger made now, after the CLI applied PIPELINE_LOG_LEVEL / _FORMAT (``log`` was bound
    # before that, with the defaults), so debug events show when asked for; bound once rather
    # than looked up on every event (the access log writes one per request).
    if context is not None:
        logging_.bind(worker=context.board.index)
    log = logging_.get_logger().bind()
    conf = settings.serve
    if conf.token is not None:
        logging_.register_secrets([conf.token.get_secret_value()])

    def load() -> Loaded:
        return load_release(settings, release, package)

    peers = context.board.all_ready if context is not None else None
    state = ServeState(conf, loader=load, log=log, peers=peers)
    server = _Server(_uvicorn_config(state, conf), state, conf.drain_seconds, log)
    if context is not None:
        server.supervisor = os.getppid()
        server.channel = socket.socket(fileno=context.channel)
        server.port = context.port

    def ready(loaded: Loaded) -> None:
        if context is not None:
            context.board.mark(workers.READY)
        p = loaded.predictor
        log.info(
            "serve.ready",
            seconds=round(time.perf_counter() - t0, 3),
            model=p.name,
            version=p.version,
            package_id=p.package_id,
            build_id=p.build_id,
            release=loaded.release,
            port=server.port,
            concurrency=state.concurrency,
            threads=conf.threads,
        )

    def failed() -> None:
        server.should_exit = True

    state.on_ready, state.on_failure = ready, failed
    _run(server, conf, log)
    if state.failure is not None:
        raise state.failure
    log.info(
        "serve.stopped",
        signal=signal.Signals(server.signal).name if server.signal else None,
        requests=state.completed,
        unanswered=state.started - state.completed,
        scoring_passes=state.batcher.batches,  # fewer than JSON requests: batches were shared
        seconds=round(time.perf_counter() - t0, 3),
    )


def _uvicorn_config(state: ServeState, conf: ServeSettings) -> uvicorn.Config:
    """The server's uvicorn configuration: the app on ``state``, and ``conf``'s limits."""
    return uvicorn.Config(
        create_app(state),
        host=conf.host,
        port=conf.port,
        access_log=False,  # one structlog event per request instead (serve.request)
        log_config=None,  # leave the process's logging alone
        lifespan="on",
        timeout_graceful_shutdown=conf.graceful_timeout,
        server_header=False,
        limit_concurrency=connection_limit(conf.max_connections),
        http=BoundedHeadProtocol.bounded(conf.header_timeout, conf.max_header_bytes),
    )


def _run(server: _Server, conf: ServeSettings, log: Any) -> None:
    """Run ``server`` until it stops, with uvicorn's own log records forwarded as events."""
    forward = _ToStructlog(log)
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(forward)
    uvicorn_log.propagate = False
    try:
        server.run(sockets=[] if server.channel is not None else None)
    except SystemExit:  # uvicorn exits when it cannot bind; it logged the reason (serve.uvicorn)
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"cannot listen on {conf.host}:{conf.port}: the address is in use or not allowed; "
            "set PORT or PIPELINE_SERVE__PORT to another port"
        ) from None
    finally:
        uvicorn_log.removeHandler(forward)
        uvicorn_log.propagate = True


def _model(settings: Settings, release: str | None, package: str | None) -> tuple[Any, ...]:
    """What ``predict.check_reference`` and ``predict.load`` take to find this server's model:
    the store, the release (the option, else PIPELINE_RELEASE), the package, the default model
    name, the run settings, and how to tell a required secret is set."""
    from pipeline.settings import provides
    from pipeline.store import Store

    store = Store.from_uri(settings.store, **settings.store_options())
    ref, secrets = release or settings.release, functools.partial(provides, settings)
    return store, ref, package, settings.model.name, settings.run, secrets


def load_release(settings: Settings, release: str | None, package: str | None) -> Loaded:
    """Load and warm up the model that ``pipeline predict`` would use with the same arguments.

    A release or package that cannot run is refused before torch is imported (``predict.load``
    verifies it first), so such a server exits with its one line without loading torch."""
    from pipeline import log as logging_
    from pipeline import predict

    ready = predict.load(*_model(settings, release, package))
    logging_.bind(package_id=ready.predictor.package_id, release=ready.release)
    if ready.overridden:
        logging_.get_logger().warning("serve.settings_ignored", **ready.ignored_event())
    import torch

    # One intra-op thread per inference by default: concurrent requests give the parallelism,
    # and N requests x all-cores threads would oversubscribe the machine.
    torch.set_num_threads(settings.serve.threads)
    loaded = Loaded.serving(ready)
    # Warm up (first-call allocations, lazy imports) so the first real request is not slow.
    body = _null_record(loaded)
    warm = loaded.contract.records_frame(body)[0]
    ready.predictor.predict_frame(warm, ready.run, label="the warm-up row")  # CSV bodies' path
    loaded.predictor.values(loaded.encoder(loaded.contract.records(body)[0]))  # JSON records'
    return loaded


def _null_record(loaded: Loaded) -> bytes:
    from pipeline.serve.contract import dumps

    record = {c.name: None for c in loaded.predictor.schema.columns}
    return dumps({"records": [record]})
