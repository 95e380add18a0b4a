"""`pipeline config show`: the resolved settings and where each value came from."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any

import typer

from pipeline.cli._common import run

app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


class Format(StrEnum):
    """What `pipeline config show` prints."""

    auto = "auto"
    table = "table"
    json = "json"


@app.command("show")
def show(
    fmt: Format = typer.Option(
        Format.auto, "--format", help="table, json, or auto (table on a terminal, else JSON)."
    ),
) -> None:
    """Print every setting, its value, its origin (default, preset, .env, env) and env name.

    Secrets are redacted. Unknown PIPELINE_* variables are listed and make the command exit 3.
    """

    def body(loaded: Any, log: Any) -> None:
        from pipeline.log import redacted_uri
        from pipeline.settings import URI_PATHS, leaves, redact, unknown_error
        from pipeline.store.checks import check_uri

        # What every store command would refuse (exit 3), said here too.
        check_uri(loaded.settings.store, **loaded.settings.store_options())
        data = loaded.settings.model_dump(mode="python")
        rows = []
        for leaf in leaves():
            value: Any = data
            for part in leaf.path:
                value = value[part]
            if leaf.secret:
                value = redact(value)
            elif leaf.path in URI_PATHS and value:
                value = redacted_uri(value)
            row = {
                "setting": ".".join(leaf.path),
                "env": leaf.env,
                "value": value,
                "origin": loaded.origins[leaf.path],
            }
            # Set by another variable than its own (the platform's PORT for serve.port).
            source = loaded.settings.source_of(*leaf.path)
            if source.startswith("env var ") and source.removeprefix("env var ") != leaf.env:
                row["from"] = source.removeprefix("env var ")
            rows.append(row)
        out = {
            "preset": str(loaded.preset) if loaded.preset else None,
            "env_file": str(loaded.env_file) if loaded.env_file else None,
            "settings": rows,
            "unknown": loaded.unknown,
        }
        table = fmt is Format.table or (fmt is Format.auto and sys.stdout.isatty())
        if table:
            width = max(len(r["env"]) for r in rows)
            typer.echo(f"{'VARIABLE':<{width}}  {'ORIGIN':<7} VALUE")
            for r in rows:
                by = f"  (from {r['from']})" if "from" in r else ""
                typer.echo(f"{r['env']:<{width}}  {r['origin']:<7} {json.dumps(r['value'])}{by}")
            for name in loaded.unknown:  # what makes every command exit 3
                typer.echo(f"{name:<{width}}  {'unknown':<7} (no such setting)")
            if loaded.preset:
                typer.echo(f"\npreset: {loaded.preset}")
        else:
            typer.echo(json.dumps(out, default=str))
        if loaded.unknown:
            error = unknown_error(loaded.unknown)
            # The document on stdout says it (its `unknown` list): an error event after it
            # made stdout two JSON documents, which `| jq` or json.load refused.
            error.answered = True
            raise error

    run("config", body, allow_unknown=True, serve_settings=True)
