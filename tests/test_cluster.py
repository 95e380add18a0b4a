"""pipeline.cluster: an embedded Ray runtime, a real two-node cluster by RAY_ADDRESS, failures.

The tests marked `ray` start Ray (``make test-ray`` runs them, ``make test`` does not); the
cluster ones share the session's ``ray_cluster`` fixture, a head and a worker node of one CPU
each in processes of their own (tests/ray_cluster.py).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from tests.ray_cluster import ray_env

from pipeline import cluster
from pipeline.errors import ConfigError, SourceError


@pytest.mark.ray
def test_an_embedded_session_stops_its_runtimes_processes_and_no_other(tmp_path: Path) -> None:
    """After the session, every process the runtime started is stopped (its agents outlived a
    stopped command by a minute), and a child the process had before ``ray.init`` (and that
    child's own child) is left running: the reaping took every descendant."""
    code = textwrap.dedent("""\
        import os, signal, subprocess, sys
        from pipeline import cluster
        child = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        with cluster.session(None, connect_timeout=5, cpus=1):
            during = cluster._descendants()
        after = cluster._descendants()
        print(child.poll() is None, len(after), len(during) > len(after))
        os.killpg(child.pid, signal.SIGKILL)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "2", "True"], done.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_an_embedded_session_is_one_private_node_and_writes_nothing_to_stdout(
    tmp_path: Path,
) -> None:
    """No RAY_ADDRESS: one local node, no stdout, no ~/.ray, its temp folder removed after."""
    temp_root = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))  # short: Ray's sockets go here
    code = textwrap.dedent(f"""\
        import json, sys, time
        from pathlib import Path
        from pipeline import cluster
        t0 = time.monotonic()
        root = Path({str(temp_root)!r})
        with cluster.session(None, connect_timeout=5, temp_root=root, cpus=2) as c:
            seconds = time.monotonic() - t0
            inside = [p.name for p in Path({str(temp_root)!r}).iterdir()]
        print(json.dumps(dict(vars(c), seconds=seconds, inside=inside)), file=sys.stderr)
        """)
    env = {**ray_env(), "HOME": str(tmp_path)}
    env.pop("RAY_AUTH_MODE")  # the session itself turns token auth off
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout == ""
        found = json.loads(done.stderr.strip().splitlines()[-1])
        assert found["embedded"] is True and found["address"] is None
        assert found["nodes"] == 1 and found["cpus"] == 2
        assert [name.startswith("pipeline-ray-") for name in found["inside"]] == [True]
        assert list(temp_root.iterdir()) == []  # removed after shutdown
        assert not (tmp_path / ".ray").exists()  # no auth token written
    finally:
        temp_root.rmdir()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_address_auto_refuses_another_commands_private_runtime(tmp_path: Path) -> None:
    """While another process runs an embedded session, RAY_ADDRESS=auto found its GCS (Ray's
    `auto` takes any running on this machine) and ran the work there, on a runtime that ends
    with that command. Now a SourceError saying so. (Placed before the tests that start the
    session's cluster: `auto` must see the private runtime alone.)"""
    code = textwrap.dedent("""\
        import sys, time
        from pipeline import cluster
        with cluster.session(None, connect_timeout=5, cpus=1):
            print("ready", file=sys.stderr, flush=True)
            time.sleep(120)
        """)
    other = subprocess.Popen(
        [sys.executable, "-c", code], env={**ray_env(), "HOME": str(tmp_path)},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stderr is not None
        while "ready" not in (line := other.stderr.readline()):
            assert line, "the embedded session did not start"
        with (
            pytest.raises(SourceError, match="only another pipeline command's private runtime"),
            cluster.session("auto", connect_timeout=10),
        ):
            pass
    finally:
        other.kill()
        other.wait(timeout=30)


@pytest.mark.ray
@pytest.mark.slow
def test_a_session_on_a_two_node_cluster_runs_tasks_on_both_nodes(
    ray_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAY_ADDRESS names the cluster: 2 nodes, 2 CPUs, and a task pinned to each node runs."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the cluster was started

    def where() -> str:  # defined here: pickled by value (workers cannot import tests/)
        return str(ray.get_runtime_context().get_node_id())

    with cluster.session(ray_cluster, connect_timeout=10) as c:
        assert c == cluster.Cluster(
            address=ray_cluster, embedded=False, cpus=2, nodes=2, node_cpus=(1, 1)
        )
        assert c.fits(1) == 2 and c.fits(2) == 0 and c.largest() == 1  # a task on one node
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        task = ray.remote(num_cpus=1)(where)
        pinned = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
            for n in nodes
        ]
        assert sorted(ray.get([t.remote() for t in pinned], timeout=60)) == nodes
    assert not ray.is_initialized()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_that_does_not_answer_is_a_source_error_within_the_timeout(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed port: exit code 5, one line naming RAY_ADDRESS, within the timeout.

    (Not an unreachable host: this sandbox's network answers TCP for any outside address.)
    """
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = address.format(port=port)
    monkeypatch.setenv("RAY_ADDRESS", address)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as caught, cluster.session(address, connect_timeout=1.5):
        pass
    assert time.monotonic() - t0 < 1.5 + 2
    message = caught.value.message
    assert caught.value.exit_code == 5 and "\n" not in message
    assert message.startswith(f"Ray cluster at RAY_ADDRESS={address} cannot be reached (")
    assert message.endswith("waited at most 1.5 s): start it, or unset RAY_ADDRESS to run embedded")


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_without_a_port_names_the_default_port_it_tried(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAY_ADDRESS=127.0.0.1 said "Connection refused" without the port: the line names the
    scheme's default port it tried (6379, or 10001 for ray://; a free one stands in here)."""
    import socket

    from pipeline import ray_probe

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(ray_probe._DEFAULT_PORTS, scheme.rstrip(":/"), port)
    with pytest.raises(SourceError) as caught:
        ray_probe.probe(f"{scheme}127.0.0.1", f"{scheme}127.0.0.1", timeout=1.5)
    message = caught.value.message
    assert caught.value.exit_code == 5 and "\n" not in message
    assert f"at 127.0.0.1:{port}, the default port; waited at most 1.5 s)" in message, message


@pytest.mark.parametrize("talks", [True, False], ids=["http-server", "silent-listener"])
def test_an_address_where_something_else_listens_is_refused_within_the_timeout(
    talks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port where an HTTP server (or a listener that never speaks) runs, not Ray: exit 5 in
    a few seconds. ray.init retried it for minutes, printing Ray's notices on stderr."""
    import socket
    import threading

    if talks:
        server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        port = server.server_address[1]
    else:
        server = socket.create_server(("127.0.0.1", 0))  # listens, never accepts or speaks
        port = server.getsockname()[1]
    address = f"127.0.0.1:{port}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError) as caught, cluster.session(address, connect_timeout=2):
            pass
    finally:
        if talks:
            server.shutdown()
        server.server_close() if talks else server.close()
    assert time.monotonic() - t0 < 2 + 2
    message = caught.value.message
    assert caught.value.exit_code == 5 and "\n" not in message
    expected = "is not a Ray cluster" if talks else "it took the connection but sent nothing"
    assert expected in message and f"RAY_ADDRESS={address}" in message, message


@pytest.mark.parametrize(
    "status",
    [b"\x8d", b"\x88"],
    ids=["http2-404-for-every-request", "grpc-server-without-rays-service"],
)
def test_an_http2_server_that_is_not_rays_gcs_is_refused_within_the_timeout(
    status: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP/2 server that answers every request with 404 (a proxy here, at
    10.255.255.1:6379), or a gRPC server without Ray's service (status 200 and the error in
    one frame that ends the stream): both send SETTINGS first, passed the check, and ray.init
    retried them for 22 s whatever PIPELINE_TUNE__CONNECT_TIMEOUT, printing 20 lines of Ray's
    gRPC errors. Now one line, exit 5, within the timeout."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # SETTINGS, empty
                seen = b""
                while b"GetClusterId" not in seen:  # the request's HEADERS
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    seen += chunk
                # HEADERS on stream 1, END_HEADERS | END_STREAM: the status (and nothing more)
                conn.sendall(bytes([0, 0, 1, 1, 5, 0, 0, 0, 1]) + status)
                conn.recv(4096)

    threading.Thread(target=answer, daemon=True).start()
    address = f"127.0.0.1:{port}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError) as caught, cluster.session(address, connect_timeout=3):
            pass
    finally:
        server.close()
    assert time.monotonic() - t0 < 3 + 2
    message = caught.value.message
    assert caught.value.exit_code == 5 and "\n" not in message
    assert f"RAY_ADDRESS={address} is not a Ray cluster" in message, message


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


def test_without_ray_a_session_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray not installed: a ConfigError that says how to install it."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with (
        pytest.raises(ConfigError, match=r"pip install 'pipeline\[ray\]'"),
        cluster.session(None, connect_timeout=1),
    ):
        pass


def test_ray_temp_folders_stay_short_enough_for_its_sockets(tmp_path: Path) -> None:
    """A temp root too long for Ray's 107-byte socket paths falls back to the system's."""
    long_root = tmp_path / ("x" * 60)
    made = cluster._temp_dir(long_root)
    try:
        assert made.name.startswith("pipeline-ray-") and made.parent != long_root
        assert len(str(made)) <= cluster._MAX_TEMP_DIR
    finally:
        shutil.rmtree(made)  # it holds its mark (``scratch``)


@pytest.mark.parametrize(
    ("address", "port"),
    [("127.0.0.1:notaport", "'notaport'"), ("127.0.0.1:99999", "'99999'"),
     ("ray://user:pw@head:1x?token=hunter22", "'1x'")],
)  # fmt: skip
def test_an_address_without_a_valid_port_is_a_config_error_that_masks_credentials(
    address: str, port: str
) -> None:
    """A port that is not one was "cannot be reached (invalid literal for int()...)", exit 5,
    with a ray:// address's ?token= value in the message; it is a setting's error (exit 3)
    that says the form expected, credentials masked."""
    with pytest.raises(ConfigError) as caught, cluster.session(address, connect_timeout=1):
        pass
    message = caught.value.message
    assert caught.value.exit_code == 3 and "\n" not in message
    assert f"has no valid port ({port}): expected host:port" in message, message
    assert "hunter22" not in message and "pw" not in message


@pytest.mark.parametrize("address", ["http://127.0.0.1:8265", "https://user:pw@head:8265/"])
def test_a_web_address_is_a_config_error_naming_the_forms_expected(address: str) -> None:
    """The dashboard's URL (http://head:8265, a common mistake) was "cannot be reached",
    exit 5 after 4 s: it is the wrong kind of address, exit 3 before any connection."""
    with pytest.raises(ConfigError) as caught, cluster.session(address, connect_timeout=1):
        pass
    message = caught.value.message
    assert caught.value.exit_code == 3 and "is a web address" in message, message
    assert "host:6379, ray://host:10001" in message and "pw" not in message


def test_an_address_with_a_password_is_masked() -> None:
    """The address shown in events and errors carries no credentials."""
    assert cluster._masked("ray://user:hunter22@head:10001") == "ray://***@head:10001"
    assert cluster._masked("10.0.0.5:6379") == "10.0.0.5:6379"


def test_importing_the_module_does_not_import_ray() -> None:
    """Ray loads only when a session starts (`pipeline --help` stays fast)."""
    code = "import sys, pipeline.cluster; assert 'ray' not in sys.modules"
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_native_ray_lines_are_dropped_from_stderr_and_the_rest_passes() -> None:
    """What Ray's core worker writes to fd 2 inside the block goes, and the lines of Ray's
    processes its driver prints; other lines stay, in order, a line split across writes
    included; Ray's fatal lines stay; after the block, all pass."""
    code = textwrap.dedent(
        """
        import os, sys
        from pipeline.cluster import native_lines_dropped
        native = b"[2026-12-05 03:45:46,365 E 11633 11633] core_worker.cc:2465: Actor ...\\n"
        with native_lines_dropped():
            os.write(2, b"first\\n" + native + b"sec")
            os.write(2, b"ond\\n[2026-12-05 03:45:46,365 W 1 2] raylet_client.cc:9: x\\n")
            os.write(2, b"\\x1b[33m(raylet)\\x1b[0m Task MapWorker(X).submit failed.\\n")
            os.write(2, b"(pid=123, ip=10.0.0.1) a worker's line\\n")
            print("from python", file=sys.stderr)
            os.write(2, b"[2026-12-05 03:45:46,365 F 1 2] core_worker.cc:1: fatal\\n")
        os.write(2, native)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.splitlines() == [
        "first",
        "second",
        "from python",
        "[2026-12-05 03:45:46,365 F 1 2] core_worker.cc:1: fatal",
        "[2026-12-05 03:45:46,365 E 11633 11633] core_worker.cc:2465: Actor ...",
    ]


def test_a_sigterm_while_ray_starts_is_the_clis_stop_not_rays_exit_15() -> None:
    """``ray.init`` installs a SIGTERM handler that calls ``sys.exit(15)``: a SIGTERM in that
    window ended `pipeline predict --workers` with exit 15 and no message. Inside
    ``_keeping_sigterm`` it becomes the KeyboardInterrupt the CLI's handler raises (exit 130,
    one line), and the CLI's handler is back afterwards."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        from pipeline import cluster

        def cli_handler(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, cli_handler)
        try:
            with cluster._keeping_sigterm():
                signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # Ray's
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()
        except KeyboardInterrupt:
            print("interrupted", signal.getsignal(signal.SIGTERM) is cli_handler)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "interrupted True\n"


@pytest.mark.ray
@pytest.mark.slow
def test_the_clis_signal_handlers_still_catch_after_a_session() -> None:
    """``ray.shutdown()`` puts the system's default action back for SIGTERM while Python still
    reports its handler: a SIGTERM after a session killed the process at once (exit 143, no
    message, `predict --workers`' staging folder left). After ``session`` the handler runs."""
    code = textwrap.dedent(
        """
        import os, signal
        from pipeline import cluster

        def cli_handler(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, cli_handler)
        with cluster.session(None, connect_timeout=5, cpus=1):
            pass
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
        except KeyboardInterrupt:
            print("handled")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout == "handled\n"


@pytest.mark.parametrize(("args", "status"), [(["--version"], 0), (["no-such-command"], 2)])
def test_a_command_that_ran_ray_leaves_with_python_s_exit_work_and_its_status(
    args: list[str], status: int
) -> None:
    """Once Ray is imported, the CLI exits past the C library's exit handlers (one destroys
    Ray's core worker under its own I/O thread: a segfault, exit 139, in about 1 of 6 `tune`
    runs stopped by SIGTERM), after what the interpreter does on its way out: atexit handlers
    run, stdout is flushed, and the command's status is kept. A C exit handler that aborts
    stands for Ray's."""
    code = textwrap.dedent(
        """
        import atexit, ctypes, sys
        import ray  # noqa: F401
        libc = ctypes.CDLL(None)
        # SIGABRT if the C library exit handlers run
        libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)
        atexit.register(lambda: print("atexit ran", file=sys.stderr))
        sys.stdout.write("buffered, not flushed")
        from pipeline.cli import main
        sys.argv = ["pipeline", *sys.argv[1:]]
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == status, done.stderr[-2000:]
    assert done.stdout.startswith("buffered, not flushed")
    assert done.stderr.rstrip().endswith("atexit ran")
