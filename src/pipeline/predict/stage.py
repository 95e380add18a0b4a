"""The run stage's unit: a release (or a package) ready to run, and the streaming prediction.

``load`` resolves a release reference or a package path into a ``Ready``: the verified
predictor with the run-stage settings that apply. ``pipeline predict`` streams a file through
it (``run``); ``pipeline serve`` answers requests with the same object.

Everything that can refuse a run cheaply (no release chosen, an unknown reference, a package
missing, damaged or replaced) is decided before torch and pandas are imported, so such a
mistake costs a user a fraction of a second, not an interpreter full of tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import metrics
from pipeline.data import cells
from pipeline.errors import (
    ConfigError,
    DataError,
    Interrupted,
    NotFoundError,
    OutputClosed,
    PipelineError,
)
from pipeline.package import OpenedPackage, open_package
from pipeline.settings import RunSettings, leaves
from pipeline.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.predict.predictor import Predictor, Stats
    from pipeline.predict.writers import Writer
    from pipeline.releases import Release


@dataclass(frozen=True)
class Ready:
    """A release ready to run: the verified predictor, its run settings, and the release ref."""

    predictor: Predictor
    run: RunSettings
    release: str | None  # name@vN, or None when run straight from a package
    # The variables of run settings the environment set that the release's bound values replace.
    overridden: tuple[str, ...] = ()

    def ignored_event(self) -> dict[str, Any]:
        """The fields of the warning that the environment's run settings in ``overridden`` are
        replaced by the release's."""
        return {
            "settings": list(self.overridden),
            "message": f"release {self.release} binds its own run settings, which apply: create a "
            "new release to change them, or run the package with --package",
        }

    def info(self) -> dict[str, Any]:
        """What is running: model, ids, release, task, input schema, metrics, run settings."""
        p = self.predictor
        return {
            "name": p.name,
            "version": p.version,
            "package_id": p.package_id,
            "build_id": p.build_id,
            "release": self.release,
            "task": p.schema.task,
            "target": p.schema.target,
            "classes": [str(c) for c in p.pre.target.classes],
            "input_schema": {
                "columns": [{"name": c.name, "kind": c.kind} for c in p.schema.columns]
            },
            "metrics": metrics.bounded(p.metrics),
            "run": self.run.model_dump(
                mode="json", exclude={"chunk_rows", "output_format", "workers"}
            ),
        }


def check_reference(
    store: Store,
    release_ref: str | None,
    package: str | Path | None,
    default_name: str | None,
    run_settings: RunSettings,
    provides: Callable[[str], bool] | None = None,
) -> None:
    """Everything ``load`` refuses before it loads the network: no model named, a release or
    package that is not there, an archive that does not verify, a required secret not set.
    `serve` checks it once before it starts its workers, which would each say it."""
    release = _opened(store, release_ref, package, default_name)[1]
    _settings_for(release, run_settings, package, provides or _in_environment)


def _open_given(store: Store, package: str) -> OpenedPackage:
    """The archive ``--package`` names: a local path, or the s3:// URI of one in the store
    (what `pipeline package` prints for an object store; it was read as the path 's3:/...')."""
    from pipeline import releases

    if not package.startswith("s3://"):
        if store.uri.startswith("s3://") and not Path(package).exists():
            raise NotFoundError(
                f"no package archive at {package}: an archive in the store {store.uri} is "
                f"named by its URI, {store.location('packages')}/<name>/<version>.tar.gz (as "
                "`pipeline package` prints it)"
            )
        if Path(package).is_dir():  # a usage mistake, not a damaged archive (exit 7 said so)
            raise ConfigError(
                f"--package {package} is a folder: pass the .tar.gz `pipeline package` writes "
                "(packages/<name>/<version>.tar.gz in the store), or run a release with --release"
            )
        return open_package(Path(package))
    key = store.key_of(package)
    if key is None:
        raise ConfigError(
            f"--package {package} is not in the store PIPELINE_STORE={store.uri}: set "
            "PIPELINE_STORE to the store it is in, or download it and pass its path"
        )
    try:
        return releases.open_stored(store, key)
    except KeyError:
        raise NotFoundError(
            f"no package archive at {package}: check the URI (`pipeline package` prints it)"
        ) from None


def _opened(
    store: Store, release_ref: str | None, package: str | Path | None, default_name: str | None
) -> tuple[OpenedPackage, Release | None]:
    """The verified package a release reference or a package path names, and the release."""
    from pipeline import releases

    if package is not None:
        return _open_given(store, str(package)), None
    if release_ref is not None and not release_ref.strip():  # `--release ""` is a usage error
        raise ConfigError(
            "PIPELINE_RELEASE is set but empty (as in an image built without a release): set "
            "it to name@vN (or name@current), or pass --release or --package PATH, which win "
            "over it"
        )
    if not release_ref:
        raise ConfigError(
            "no model to run: pass --release name@vN (or name@current), set PIPELINE_RELEASE, "
            "or pass --package PATH"
        )
    release = releases.show(store, release_ref, default_name)
    opened = releases.released_package(store, release)
    return opened, release


def load(
    store: Store,
    release_ref: str | None,
    package: str | Path | None,
    default_name: str | None,
    run_settings: RunSettings,
    provides: Callable[[str], bool] | None = None,
) -> Ready:
    """The predictor and the run settings that apply, for a release reference or a package path.

    A release carries the run-stage settings it was created with (threshold, id column, error
    handling, output format); they win over the environment's, because a release is immutable
    configuration. ``chunk_rows`` is the exception: it sizes memory for the machine the process
    runs on, so it always comes from the environment, as does ``workers``. With ``--package``
    the environment's settings apply. ``provides`` says whether a required secret is set
    (``settings.provides``: the environment, or a setting's value from ``.env``).
    """
    opened, release = _opened(store, release_ref, package, default_name)
    bound = _settings_for(release, run_settings, package, provides or _in_environment)
    if release is None:
        return Ready(_predictor(opened), bound, None)
    return Ready(_predictor(opened), bound, release.ref, _overridden(run_settings, bound))


def _settings_for(
    release: Release | None,
    run_settings: RunSettings,
    package: str | Path | None,
    provides: Callable[[str], bool],
) -> RunSettings:
    """The run settings that apply (``load``), their required secrets checked."""
    if release is None:
        _check_secrets(run_settings, f"--package {package}", provides)
        return run_settings
    machine = {"chunk_rows": run_settings.chunk_rows, "workers": run_settings.workers}
    bound = RunSettings.model_validate({**release.run, **machine})
    _check_secrets(bound, f"release {release.ref}", provides)
    return bound


def _in_environment(name: str) -> bool:
    import os

    return bool(os.environ.get(name))


def _check_secrets(run_settings: RunSettings, what: str, provides: Callable[[str], bool]) -> None:
    """A ``ConfigError`` naming the secrets ``run.required_secrets`` lists that the
    environment does not set (or sets empty): a run that needs them fails at its start, as a
    twelve-factor process does, not later. Only names are read and said, never values."""
    missing = [name for name in run_settings.required_secrets if not provides(name)]
    if missing:
        raise ConfigError(
            f"{what} requires the secret(s) {missing} (PIPELINE_RUN__REQUIRED_SECRETS), which "
            "the environment does not set: set them for this process (their values are never "
            "recorded)"
        )


def _overridden(env: RunSettings, bound: RunSettings) -> tuple[str, ...]:
    """The variables of the run settings that ``env`` sets away from their defaults and the
    release binds to another value: the release's value applies, and the caller warns."""
    return tuple(
        leaf.env
        for leaf in leaves(RunSettings, ("run",))
        if getattr(env, leaf.path[-1]) not in (leaf.default, getattr(bound, leaf.path[-1]))
    )


def _predictor(opened: OpenedPackage) -> Predictor:
    """The network of a verified package, loaded: the first point that needs torch."""
    from pipeline import collector

    with collector.paused("torch"):
        from pipeline.predict.predictor import Predictor

    return Predictor.from_opened(opened)


def run(
    ready: Ready,
    source: Path,
    output: Path | None,
    log: Any,
) -> Stats:
    """Predict every row of ``source`` into ``output`` (stdout when None), chunk by chunk."""
    from pipeline import runtime
    from pipeline.predict.predictor import Stats
    from pipeline.predict.readers import iter_chunks, output_format, prefetched, spooled
    from pipeline.predict.spelling import warn_all_unknown, warn_misspelt
    from pipeline.predict.writers import Writer

    t0 = time.perf_counter()
    predictor, run_settings = ready.predictor, ready.run
    predictor.network.threads = runtime.for_inference()
    out_fmt = output_format(output, run_settings.output_format)
    if output is None and out_fmt == "parquet":
        raise ConfigError("Parquet output needs a file: pass -o PATH.parquet")
    stats = Stats()
    with spooled(source) as (path, label, in_fmt):
        chunks = prefetched(
            iter_chunks(
                path, in_fmt, run_settings.chunk_rows, predictor, run_settings, stats, label
            )
        )
        writer = Writer(output, out_fmt)
        try:
            predict_into(
                writer, chunks, predictor, run_settings, label, stats,
                on_extra=lambda names: warn_extra(log, names),
            )  # fmt: skip
        except (PipelineError, KeyboardInterrupt) as exc:
            if writer.streamed_to is None or isinstance(exc, OutputClosed):
                raise
            raise _incomplete(exc, writer.streamed_to) from None
        finally:
            chunks.close()
    seconds = time.perf_counter() - t0
    warn_misspelt(log, stats.unseen, predictor.vocabs, stats.unknown_categories)
    warn_all_unknown(log, stats.unseen, predictor.vocabs, stats.unknown_categories, stats.known)
    log.info(
        "predict.summary",
        model=predictor.name,
        version=predictor.version,
        package_id=predictor.package_id,
        build_id=predictor.build_id,
        input=str(source),
        output=str(output) if output else "-",
        rows=stats.rows,
        chunks=stats.chunks,
        errors=stats.errors,
        unknown_categories=stats.unknown_categories,
        extra_columns=stats.extra_columns[: cells.SHOWN_COLUMNS],
        seconds=round(seconds, 3),
        rows_per_second=round(stats.rows / seconds) if seconds > 0 else None,
        threads=predictor.network.threads,
    )
    return stats


def _incomplete(exc: PipelineError | KeyboardInterrupt, where: str) -> PipelineError:
    """``exc`` saying that the predictions of earlier rows went to ``where`` (stdout, or a
    device or pipe) already: whoever reads it holds an incomplete output (a run to a file
    leaves no file: that one says "nothing was written")."""
    said = f"the predictions of earlier rows went to {where} already: that output is incomplete"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"predict interrupted: {said}; run it again")
    exc.args = (f"{exc.message} ({said})", *exc.args[1:])
    return exc


def predict_into(
    writer: Writer,
    chunks: Iterable[pd.DataFrame],
    predictor: Predictor,
    run_settings: RunSettings,
    label: str,
    stats: Stats,
    *,
    on_extra: Callable[[list[str]], None] | None = None,
) -> None:
    """Predict ``chunks`` of the input ``label`` names into ``writer``; commit if all went well.

    The one loop behind every prediction file, in-process or on a Ray worker (``distributed``),
    so that both write the same bytes for the same rows. ``on_extra`` is told, before the first
    chunk, of input columns the model does not use. No rows at all is a ``DataError``.
    """
    try:
        for chunk in chunks:
            if stats.chunks == 0 and stats.extra_columns and on_extra is not None:
                on_extra(stats.extra_columns)
            writer.write(predictor.predict_frame(chunk, run_settings, label=label, stats=stats))
        if stats.rows == 0:
            raise DataError(
                f"input {label} has no rows: nothing to predict; check that the file is complete"
            )
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def warn_extra(log: Any, names: list[str], **context: Any) -> None:
    """The ``predict.extra_columns`` warning for input columns the model does not use."""
    log.warning(
        "predict.extra_columns",
        **context,
        # A wide file must not turn one event into a megabyte: the first names only.
        columns=names[: cells.SHOWN_COLUMNS],
        count=len(names),
        message="columns the model does not use are ignored",
    )
