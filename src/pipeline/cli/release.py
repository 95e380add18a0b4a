"""`pipeline release ...`: numbered, immutable releases of a package, with rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.cli._common import run, store_of, write_id

app = typer.Typer(
    help=(
        "Release a package with the run settings (PIPELINE_RUN__*) under a consecutive number "
        "per model; list, show and roll back releases. Releases are never modified."
    ),
    no_args_is_help=True,
)

NAME_HELP = "Model name. Defaults to PIPELINE_MODEL__NAME."


@app.command("create")
def create(
    package: str = typer.Argument(
        ..., help="Package id (or a unique prefix of 4+ hex digits), or its .tar.gz in the store."
    ),
    id_file: Path = typer.Option(
        None, "--id-file", help="Also write the release reference (name@vN) here."
    ),
) -> None:
    """Release PACKAGE with the PIPELINE_RUN__* settings and make it current."""

    def body(loaded: Any, log: Any) -> None:
        from pipeline import releases

        store = store_of(loaded.settings, writes=True, outputs={"--id-file": id_file})
        sidecar = releases.resolve_package(store, package)
        release = releases.create(store, sidecar["package_id"], loaded.settings.run, log=log)
        log.info(
            "release.created",
            release=release.ref,
            name=release.name,
            number=release.number,
            package_id=release.package_id,
            build_id=release.build_id,
            version=release.version,
            required_secrets=release.run.get("required_secrets", []),
        )
        write_id(id_file, release.ref)

    run("release", body, outputs={"--id-file": id_file})


@app.command("list")
def list_(
    model_name: str = typer.Argument(
        None, metavar="NAME", help="Model name (or --name).", show_default=False
    ),
    name: str = typer.Option(None, "--name", help=NAME_HELP, show_default=False),
) -> None:
    """List the releases of a model, marking the current one."""

    def body(loaded: Any, log: Any) -> None:
        from pipeline import releases
        from pipeline.errors import ConfigError
        from pipeline.log import answer

        if model_name is not None and name is not None and model_name != name:
            raise ConfigError(f"release list {model_name} --name {name}: give one model")
        store = store_of(loaded.settings)
        model = model_name or name or loaded.settings.model.name
        rows = releases.list_releases(store, model, log=log)
        if not rows:
            _known_model(store, model)
        current = next((r["number"] for r in rows if r["current"]), None)
        answer("release.list", name=model, count=len(rows), current=current, releases=rows)

    run("release", body)


def _known_model(store: Any, model: str) -> None:
    """A ``NotFoundError`` for a model with neither a release nor a package in ``store``: a
    misspelt name, or the wrong PIPELINE_STORE (a CI job read "count 0" and went on). A
    model packaged but not yet released lists no releases."""
    import difflib

    from pipeline.errors import NotFoundError

    released = [m for m in store.list("releases") if "current" in store.list(f"releases/{m}")]
    known = sorted({*released, *store.list("packages")})  # a folder alone (a lock) is no model
    if model in known:
        return
    near = difflib.get_close_matches(model, known, n=1)
    hint = (
        f"did you mean '{near[0]}'?"
        if near
        else f"its models: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}"
        if known
        else "it holds no packages or releases: check PIPELINE_STORE"
    )
    raise NotFoundError(
        f"no model '{model}' in store {store.uri} (no package or release of it): {hint}"
    )


@app.command("show")
def show(
    ref: str = typer.Argument(
        ..., help="name@vN or name@current (vN or current use PIPELINE_MODEL__NAME)."
    ),
) -> None:
    """Show one release record."""

    def body(loaded: Any, log: Any) -> None:
        from pipeline import releases
        from pipeline.log import answer

        store = store_of(loaded.settings)
        release = releases.show(store, ref, loaded.settings.model.name)
        current = releases.current_number(store, release.name)
        answer(
            "release.show",
            release=release.ref,
            current=release.number == current,
            **release.record(),
        )

    run("release", body)


@app.command("rollback")
def rollback(
    to: str = typer.Option(
        None,
        "--to",
        help="Release to make current, e.g. v3 or house-prices@v3 (default: the one before "
        "current).",
    ),
    name: str = typer.Option(None, "--name", help=NAME_HELP, show_default=False),
) -> None:
    """Make an earlier release current again; the history records the change."""

    def body(loaded: Any, log: Any) -> None:
        from pipeline import releases

        store = store_of(loaded.settings, writes=True)
        model, target = name or loaded.settings.model.name, None
        if to:
            model, target = releases.rollback_target(to, name, loaded.settings.model.name)
        previous, current = releases.rollback(store, model, target, log=log)
        if previous == current:  # like `kubectl rollout undo` to the running revision
            log.info(
                "release.rollback_skipped",
                name=model,
                release=f"{model}@v{current}",
                current=current,
                reason="already the current release: nothing changed",
            )
            return
        log.info(
            "release.rolled_back",
            name=model,
            release=f"{model}@v{current}",
            previous=previous,
            current=current,
        )

    run("release", body)
