"""The input files of `pipeline predict --workers`: a file, a folder's data files, a glob's
matches, or several files named one by one; and the warnings for what of them is not read."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DataError

# What a folder or a glob contributes: the files predict reads, by suffix.
SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
# What a folder contributes: data files by their names. A .txt or .json there is more often a
# note or a schema than rows (they are read when named, or matched by a glob).
FOLDER_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".jsonl", ".ndjson")


_GLOB = set("*?[")


def inputs(source: Path) -> list[Path]:
    """The input files of ``source``: itself, a folder's files or a glob's, in sorted order.

    A folder contributes its files (not sub-folders) whose names end in a suffix predict reads,
    leaving out hidden ones and ``_``-prefixed markers such as Spark's ``_SUCCESS``.
    """
    text = str(source)
    # Options that contradict each other (exit 3), not bad data: the rows may be fine.
    if text == "-":
        raise ConfigError(
            "input - (stdin) is not read: --workers reads files, a folder or a glob; save the "
            "rows to a file and pass its path"
        )
    if source.exists() and not source.is_file() and not source.is_dir():
        raise ConfigError(  # `<(cat f.csv)`: each worker opened /dev/fd/63 of its own, "missing"
            f"input {source} is a pipe or a device, not a file: --workers reads files every "
            "worker can open; save the rows to a file and pass its path"
        )
    if source.is_dir():
        broken = sorted(
            p.name
            for p in source.iterdir()
            if p.is_symlink() and not p.exists() and _readable_name(p.name)
        )
        if broken:
            # A link to nothing was neither read nor said: its rows were silently missing.
            target = (source / broken[0]).readlink()
            raise DataError(
                f"input folder {source} holds {broken[0]}, a link to {target}, which does not "
                f"exist{f' ({len(broken)} such links)' if len(broken) > 1 else ''}: fix the "
                "link or remove it"
            )
        _no_pipes([p for p in source.iterdir() if _readable_name(p.name)], f"folder {source}")
        found = [p for p in source.iterdir() if p.is_file() and _readable_name(p.name)]
        if not found:
            nested = " (sub-folders are not read: pass a glob such as 'DIR/*/*.parquet')"
            raise DataError(
                f"input folder {source} holds no CSV, Parquet or JSON-lines file: expected files "
                f"ending in {', '.join(FOLDER_SUFFIXES)}{nested if _subfolders(source) else ''}"
            )
        return sorted(found, key=lambda p: p.name)
    if not source.exists() and _GLOB & set(text):
        # glob.glob, not Path.glob: absolute patterns, and each path spelt as the pattern spells
        # it (the label messages and the manifest give it). ``**`` matches any depth of
        # folders, as Spark's and the shell's globstar do (it matched one level).
        paths = glob.glob(text, recursive=True)  # noqa: PTH207
        _no_pipes([Path(p) for p in paths], f"pattern {text}")
        matched = sorted(Path(p) for p in paths if Path(p).is_file())
        if not matched:
            raise DataError(f"input pattern {text} matches no file: check the pattern")
        return matched
    return [source]  # a file; the reader says what is wrong with a missing one


def _no_pipes(paths: list[Path], where: str) -> None:
    """A ``DataError`` naming the first of ``paths`` that is a pipe or a device (a FIFO named
    b.csv in a folder was skipped without a word)."""
    special = sorted(str(p) for p in paths if p.exists() and not p.is_file() and not p.is_dir())
    if special:
        raise DataError(
            f"input {where} holds {special[0]}, a pipe or a device, not a file: --workers "
            "reads files every worker can open; save its rows to a file, or move it away"
        )


def warn_about(sources: list[Path], source: Path, log: Any) -> None:
    """Warnings for what of ``sources`` is not read as given: a folder's sub-folders and
    other files, and a file named twice."""
    skipped = _subfolders(sources[0]) if len(sources) == 1 else []
    if skipped:  # a folder's files are read, not its sub-folders' (Hive-style partitions)
        log.warning(
            "predict.subfolders_skipped", folder=str(source), count=len(skipped),
            first=skipped[:5], hint="pass a glob such as 'DIR/*/*.parquet' to read them",
        )  # fmt: skip
    repeated = sorted({str(p) for p in sources if sources.count(p) > 1})
    if repeated:  # `a.csv a.csv`: one part, read once; said, as a count would not
        log.warning(
            "predict.inputs_repeated", count=len(repeated), first=repeated[:5],
            hint="a file named twice is read once, into one part",
        )  # fmt: skip
    others = _other_files(sources[0]) if len(sources) == 1 else []
    if others:  # a README, notes, a schema: said, not read as rows
        log.warning(
            "predict.files_skipped", folder=str(source), count=len(others), first=others[:5],
            hint=f"a folder's files ending in {', '.join(FOLDER_SUFFIXES)} are read; pass a "
            "glob or the files' names to read others",
        )  # fmt: skip


def listed(sources: list[Path]) -> list[Path]:
    """Several inputs named one by one: each a file, in sorted order as a glob's, once each."""
    for path in sources:
        if path.is_dir() or (not path.exists() and _GLOB & set(str(path))):
            raise DataError(
                f"input {path} is a folder or a pattern among {len(sources)} inputs: name "
                "files one by one, or pass one folder or one quoted glob alone"
            )
    return sorted(dict.fromkeys(sources))


def _subfolders(source: Path) -> list[str]:
    """The names of ``source``'s sub-folders that are not hidden or ``_``-prefixed, sorted."""
    if not source.is_dir():
        return []
    return sorted(p.name for p in source.iterdir() if p.is_dir() and p.name[:1] not in "._")


def _readable_name(name: str) -> bool:
    """Whether a folder contributes the file ``name`` (``FOLDER_SUFFIXES``, not hidden)."""
    return not name.startswith((".", "_")) and name.lower().endswith(FOLDER_SUFFIXES)


def _other_files(source: Path) -> list[str]:
    """The names of ``source``'s files that a folder does not contribute (neither hidden nor
    ``_``-prefixed markers), sorted: said in a warning."""
    if not source.is_dir():
        return []
    return sorted(
        p.name
        for p in source.iterdir()
        if p.is_file() and p.name[:1] not in "._" and not _readable_name(p.name)
    )
