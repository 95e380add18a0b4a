"""Run-stage command: `pipeline serve`."""

from __future__ import annotations

from typing import Any

import typer

from pipeline.cli._common import run
from pipeline.cli._models import refuse_release_and_package


def serve(
    release: str = typer.Option(
        None,
        "--release",
        help="name@vN or name@current. Overrides PIPELINE_RELEASE.",
        show_default=False,
    ),
    package: str = typer.Option(
        None,
        "--package",
        help="Serve a package archive (a path, or its s3:// URI in the store) instead of a "
        "release.",
    ),
    host: str = typer.Option(
        None,
        "--host",
        help="Interface to bind. Overrides PIPELINE_SERVE__HOST (0.0.0.0).",
        show_default=False,
    ),
    port: int = typer.Option(
        None,
        "--port",
        help="TCP port. Overrides PIPELINE_SERVE__PORT and PORT (8080).",
        show_default=False,
    ),
) -> None:
    """Serve a release (or a package) over HTTP until SIGTERM.

    GET /healthz (alive), GET /readyz (release loaded), GET /v1/model (name, version, ids,
    input schema, metrics), POST /v1/predict (JSON {"records": [...]} or a CSV body), and
    /openapi.json generated from the package's input schema. Logs are JSON events on stdout,
    one `serve.request` per request. SIGTERM finishes the requests in flight and exits 0.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline.serve.server import serve as run_server

        refuse_release_and_package(release, package)
        run_server(loaded.settings, release, package)

    overrides = {}
    if host is not None:
        overrides["PIPELINE_SERVE__HOST"] = host
    if port is not None:
        overrides["PIPELINE_SERVE__PORT"] = str(port)
    run("serve", body, overrides=overrides or None, serve_settings=True)
