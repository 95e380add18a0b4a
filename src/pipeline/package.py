"""Packages: a build sealed into one byte-reproducible archive, and opened again safely.

A package is ``packages/<name>/<version>.tar.gz`` in the store, with
``packages/<name>/<version>.json`` beside it. The archive holds, under one top folder
``<name>-<version>/``, every file of the build except ``run.json`` (its timestamps would make
two packagings of one build differ), the build's ``manifest.json`` without its ``run.json``
entry, and a ``package.json``::

    {"format": 1, "name": ..., "version": ..., "build_id": ..., "files": {name: sha256}}

Its id is the sha256 of the archive bytes. Every tar header is normalised (mtime 0, owner 0,
no user names, fixed modes, sorted names) and the gzip header carries no name or time, so the
same build sealed twice gives the same bytes, on any machine with the same zlib. (One model
retrained on another machine has the same build id but records another environment in
``provenance.json``, so it seals to another package.)

A version is sealed once: packaging different content under a version that exists is refused.
``open_package`` checks every member header before reading a byte of content, then verifies
every file against ``package.json`` and the build's own ``manifest.json`` and recomputes the
build id. Nothing is unpickled.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline import __version__, artifacts, signals, wheel
from pipeline.errors import ConfigError, IntegrityError, NotFoundError, StoreError
from pipeline.settings import (
    MAX_NAME_LENGTH,
    MODEL_NAME_RE,
    MODEL_NAME_RULE,
    MODEL_VERSION_RE,
    MODEL_VERSION_RULE,
    Settings,
)
from pipeline.store import Store, canonical_json

FORMAT = 1
PACKAGE_FILE = "package.json"
EXCLUDED = frozenset({"run.json"})  # volatile timestamps: recorded in the build, not sealed
REQUIRED = frozenset({*artifacts.ID_FILES, "manifest.json", PACKAGE_FILE, "provenance.json"})
MAX_MEMBER_BYTES = 2 << 30  # 2 GiB: far above any tabular model, far below a disk-filling bomb
MAX_TOTAL_BYTES = 4 << 30

# The rules live with the settings, which check them when they load (before any work); they are
# checked again here for callers that build Settings in code.
NAME_RE, VERSION_RE = MODEL_NAME_RE, MODEL_VERSION_RE
# A gzip stream starts with these two bytes; a file without them was never a package archive.
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class PackageResult:
    """What `pipeline package` sealed."""

    name: str
    version: str
    package_id: str
    build_id: str
    location: str  # where a person finds the archive: a local path, or an s3:// URI
    bytes: int
    wheel: str | None = None


def check_name_version(name: str, version: str) -> None:
    """Refuse a model name or version that cannot safely name a package file (a long one
    included: it would fail as a file name the file system refuses, far from its cause)."""
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"model name '{name}' (PIPELINE_MODEL__NAME) is not valid: {MODEL_NAME_RULE}"
        )
    if len(version) > MAX_NAME_LENGTH or not VERSION_RE.fullmatch(version):
        raise ConfigError(
            f"model version '{version}' (PIPELINE_MODEL__VERSION) is not valid: "
            f"{MODEL_VERSION_RULE}"
        )


def _tarinfo(name: str, size: int | None) -> tarfile.TarInfo:
    """A header that says nothing about who made the archive, when, or where."""
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if size is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = size
    return info


def archive_bytes(files: dict[str, bytes], top: str) -> bytes:
    """The reproducible ``.tar.gz`` of ``files`` (flat names) under the folder ``top``."""
    raw = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of the temp name and the clock.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_tarinfo(top, None))
        for name in sorted(files):
            data = files[name]
            tar.addfile(_tarinfo(f"{top}/{name}", len(data)), io.BytesIO(data))
    return raw.getvalue()


def build_archive(build: artifacts.Build, name: str, version: str) -> bytes:
    """Seal a verified build's files and a ``package.json`` into archive bytes."""
    files = {name: data for name, data in sorted(build.files.items()) if name not in EXCLUDED}
    # run.json (timestamps) and provenance.json's environment (CPU, kernel, threads, git) stay
    # in the build: sealed, equal builds packaged differently by machine or thread count. The
    # build id covers neither, so it still recomputes from the sealed files.
    manifest = dict(build.manifest)
    sealed = {n: m for n, m in build.manifest["files"].items() if n not in EXCLUDED}
    prov = files["provenance.json"] = canonical_json(
        {"inputs": json.loads(files["provenance.json"])["inputs"]}
    )
    sealed["provenance.json"] = {"sha256": hashlib.sha256(prov).hexdigest(), "size": len(prov)}
    manifest["files"] = sealed
    files["manifest.json"] = canonical_json(manifest)
    digests = {n: hashlib.sha256(d).hexdigest() for n, d in sorted(files.items())}
    meta = {"format": FORMAT, "name": name, "version": version, "build_id": build.id,
            "files": digests}  # fmt: skip
    files[PACKAGE_FILE] = json.dumps(meta, sort_keys=True, indent=2).encode() + b"\n"
    return archive_bytes(files, f"{name}-{version}")


def seal(
    settings: Settings, store: Store, ref: str | None, log: Any, *, with_wheel: bool = False,
    named: bool = True,
) -> PackageResult:  # fmt: skip
    """`pipeline package`: seal a verified build as ``<name>@<version>`` in the store.

    ``with_wheel`` also writes ``packages/<name>/<dist>-<version>-py3-none-any.whl``, built from
    the files of the archive just sealed, opened and verified again (see ``pipeline.wheel``).
    ``named``: a setting chose the model's name (``artifacts.check_packaging``)."""
    name, version = settings.model.name, settings.model.version
    check_name_version(name, version)
    if with_wheel:  # a name or version no wheel can carry: refused before anything is stored
        wheel.check_can_build(name, version, store.list("packages"), store.uri)
    build = artifacts.load_build(store, ref)
    artifacts.check_packaging(build, settings, latest=ref is None, named=named)
    data = build_archive(build, name, version)
    package_id = hashlib.sha256(data).hexdigest()
    key = f"packages/{name}/{version}.tar.gz"
    record = {"name": name, "version": version, "package_id": package_id, "build_id": build.id}
    # The archive and its record, whole or not at all: a stop request waits for both.
    with signals.held(then_stop=False, second_stops=True):
        # create() never overwrites: two writers racing for one version cannot clobber each other.
        created = store.create(key, data)
        if not created:
            existing = hashlib.sha256(store.read_bytes(key)).hexdigest()
            if existing != package_id:
                _refuse_or_repair(store, key, data, package_id, existing, name, version)
        try:
            store.write_json(f"packages/{name}/{version}.json", record)
        except StoreError:  # a full disk: no archive is left without its record
            if created:
                store.delete(key)
            raise
    extra: dict[str, Any] = {}
    wheel_at = None
    if with_wheel:
        # From the sealed archive, not the build: the wheel carries exactly the verified files.
        opened = open_package(store.local_file(key))
        filename, wheel_data = wheel.build_wheel(
            opened.name, opened.version, opened.package_id, opened.build_id, opened.files,
            requires=f"pipeline=={__version__}")  # fmt: skip
        store.write(f"packages/{name}/{filename}", wheel_data)
        wheel_at = store.location(f"packages/{name}/{filename}")
        extra = {"wheel": wheel_at, "wheel_sha256": hashlib.sha256(wheel_data).hexdigest()}
    where = store.location(key)  # an s3:// store's URI, not the local scratch copy's path
    log.info(
        "package.summary", name=name, version=version, package_id=package_id, build_id=build.id,
        path=where, bytes=len(data), **extra,
    )  # fmt: skip
    return PackageResult(name, version, package_id, build.id, where, len(data), wheel_at)


def _refuse_or_repair(
    store: Store, key: str, data: bytes, package_id: str, existing: str, name: str, version: str
) -> None:
    """The archive at ``key`` is not this package: damaged since (its record names this one:
    written again), damaged beyond repair here (not what its record names), or another."""
    try:
        recorded = store.read_json(key.removesuffix(".tar.gz") + ".json")["package_id"]
    except (KeyError, TypeError, ValueError):
        recorded = None
    if recorded == package_id:
        return store.write(key, data)
    damaged = f"is damaged (sha256 {existing[:12]}, its record: {str(recorded)[:12]})"
    if recorded is not None and recorded != existing:
        raise IntegrityError(f"the archive {key} {damaged}: package that build again")
    raise ConfigError(
        f"model {name} version {version} is already packaged with different content "
        f"(package {existing[:12]}): bump PIPELINE_MODEL__VERSION"
    )


@dataclass(frozen=True)
class OpenedPackage:
    """A package whose every file has been checked against its digests and its build id."""

    name: str
    version: str
    package_id: str
    build_id: str
    files: dict[str, bytes]  # flat file name -> bytes, all verified

    def json(self, name: str) -> Any:
        """A JSON file of the package (already verified)."""
        return json.loads(self.files[name])

    def extract(self, target: Path) -> Path:
        """Write the verified files to ``target/<name>-<version>/`` and return that folder."""
        folder = target / f"{self.name}-{self.version}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder


def _check_member(member: tarfile.TarInfo, source: Path) -> PurePosixPath:
    """Refuse a member that could write outside the target or is not plain data."""
    name = member.name
    where = f"package {source.name}: member '{name}'"
    if not name or "\\" in name or "\0" in name:
        raise IntegrityError(f"{where} has an invalid name: the archive is not a package")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise IntegrityError(f"{where} is an absolute path: the archive is unsafe, do not use it")
    if any(part in ("..", ".") for part in path.parts):
        raise IntegrityError(f"{where} has a '..' or '.' component: the archive is unsafe")
    if not (member.isreg() or member.isdir()):
        raise IntegrityError(
            f"{where} is not a regular file or folder (link, device or fifo): the archive is unsafe"
        )
    if member.size > MAX_MEMBER_BYTES:
        raise IntegrityError(f"{where} is {member.size} bytes, over the {MAX_MEMBER_BYTES} bound")
    return path


def _gunzip(data: bytes, limit: int, source: Path) -> bytes:
    """Decompress one gzip member, refusing more than ``limit`` bytes (a decompression bomb).

    zlib checks the trailer's CRC-32 and length, so a damaged byte anywhere is caught.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    while pending and not inflater.eof:
        out += inflater.decompress(pending, limit + 1 - len(out))
        if len(out) > limit:
            raise IntegrityError(
                f"package {source.name} expands beyond {limit} bytes: refused as a "
                "decompression bomb"
            )
        pending = inflater.unconsumed_tail
    if not inflater.eof or inflater.unused_data:
        raise IntegrityError(f"package {source.name} is truncated or has trailing data")
    return bytes(out)


def open_package(path: Path) -> OpenedPackage:
    """Open a package archive, refusing anything unsafe before reading any content.

    Checks, in order: every member header (no absolute or ``..`` paths, only regular files and
    folders, one top folder, one level deep, size bounds, no duplicates); then every file's
    sha256 against ``package.json`` and against the build's ``manifest.json``; then the build
    id recomputed from the verified digests. Any failure raises ``IntegrityError``.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"no package archive at {path}: check the path (`pipeline package` writes them to "
            "packages/<name>/<version>.tar.gz in the store), or run a release with --release"
        ) from None
    except OSError as exc:
        raise IntegrityError(f"package {path} cannot be read: {exc.strerror or exc}") from exc
    if not data.startswith(GZIP_MAGIC):
        raise IntegrityError(
            f"{path} is not a package archive: it is {_looks_like(data)}, where a package is "
            "the .tar.gz `pipeline package` writes (packages/<name>/<version>.tar.gz in the "
            "store); pass that file to --package, or use --release"
        )
    package_id = hashlib.sha256(data).hexdigest()
    try:
        # Decompress all of it first: tarfile stops at the end-of-archive blocks and would never
        # check the gzip trailer (CRC and length), so a flipped byte there would pass unseen.
        raw = _gunzip(data, MAX_TOTAL_BYTES + (1 << 20), path)
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            top, files = _read_members(tar, path)
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IntegrityError(
            f"package {path} is not a readable .tar.gz ({exc}): the file is damaged; package its "
            "build again (`pipeline package BUILD`: the same bytes) or restore it"
        ) from exc
    opened = _verify(files, package_id, f"package {path.name}")
    if top != f"{opened.name}-{opened.version}":
        raise IntegrityError(
            f"package {path.name}: top folder '{top}' is not '{opened.name}-{opened.version}'"
        )
    return opened


def _looks_like(data: bytes) -> str:
    """What a file that is not gzip seems to be, for the message that refuses it."""
    if not data:
        return "empty"
    if data.startswith(b"PK\x03\x04"):
        return "a zip archive (a wheel? install it with pip)"
    if data.startswith(b"PAR1"):
        return "a Parquet file (input rows? pass it as the SOURCE argument)"
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 4 KiB boundary
            return "binary data, not gzip"
    return "text (a CSV or JSON file? input rows go in the SOURCE argument)"


def open_directory(folder: Path, package_id: str | None = None) -> OpenedPackage:
    """Open a package's files laid out flat in ``folder`` (as an installed wheel holds them).

    The files are verified exactly as ``open_package`` verifies an archive's: every file against
    ``package.json`` and the build's ``manifest.json``, then the build id. Only regular files
    are accepted. ``package_id`` is the id of the archive the files came from, when the caller
    knows it; without it the files are sealed again to compute it (the same id on a machine
    with the same zlib). Any failure raises ``IntegrityError``.
    """
    where = f"package folder {folder}"
    files: dict[str, bytes] = {}
    total = 0
    try:
        for path in sorted(folder.iterdir()):
            if path.is_symlink() or not path.is_file():
                raise IntegrityError(
                    f"{where}: '{path.name}' is not a regular file: the folder was modified"
                )
            total += path.stat().st_size
            if total > MAX_TOTAL_BYTES:
                raise IntegrityError(f"{where} holds over {MAX_TOTAL_BYTES} bytes")
            files[path.name] = path.read_bytes()
    except OSError as exc:
        raise IntegrityError(f"{where} cannot be read: {exc.strerror or exc}") from exc
    if package_id is None and PACKAGE_FILE in files:
        try:
            meta = json.loads(files[PACKAGE_FILE])
            top = f"{meta['name']}-{meta['version']}"
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where} has an unreadable package.json: it is damaged") from exc
        package_id = hashlib.sha256(archive_bytes(files, top)).hexdigest()
    return _verify(files, package_id or "", where)


def _read_members(tar: tarfile.TarFile, source: Path) -> tuple[str, dict[str, bytes]]:
    """Check every header first, then read the regular files' bytes (nothing is written).

    Each header is checked as soon as it is parsed, before the archive is read any further, so
    a member claiming an absurd size is refused on its header alone.
    """
    tops: set[str] = set()
    seen: set[str] = set()
    members: list[tarfile.TarInfo] = []
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        rel = _check_member(member, source)
        if member.name in seen:
            raise IntegrityError(f"package {source.name}: member '{member.name}' appears twice")
        seen.add(member.name)
        tops.add(rel.parts[0])
        if member.isreg() and len(rel.parts) != 2:
            raise IntegrityError(
                f"package {source.name}: member '{member.name}' is not directly inside the top "
                "folder: the archive is not a package"
            )
        if member.isdir() and len(rel.parts) != 1:
            raise IntegrityError(
                f"package {source.name}: member '{member.name}' is a nested folder: the archive "
                "is not a package"
            )
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise IntegrityError(
                f"package {source.name}: member '{member.name}' takes the archive over "
                f"{MAX_TOTAL_BYTES} bytes"
            )
    if len(tops) != 1:
        raise IntegrityError(
            f"package {source.name} has {len(tops)} top folders {sorted(tops)}: expected one"
        )
    files: dict[str, bytes] = {}
    for member in members:
        if member.isreg():
            fh = tar.extractfile(member)
            assert fh is not None  # a regular member always has a file object
            files[PurePosixPath(member.name).name] = fh.read()
    return tops.pop(), files


def _verify(files: dict[str, bytes], package_id: str, where: str) -> OpenedPackage:
    """Check the files against package.json, the build manifest and the build id."""
    missing = sorted(REQUIRED - set(files))
    if missing:
        raise IntegrityError(f"{where} lacks {missing}: it is incomplete, package the build again")
    try:
        meta = json.loads(files[PACKAGE_FILE])
        manifest = json.loads(files["manifest.json"])
        inputs = json.loads(files["provenance.json"])["inputs"]
        name, version, bid = meta["name"], meta["version"], meta["build_id"]
        listed: dict[str, str] = meta["files"]
        manifest_files: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{where} has an unreadable package.json, manifest or provenance: it is damaged"
        ) from exc
    if meta.get("format") != FORMAT:
        raise IntegrityError(f"{where} has format {meta.get('format')!r}: expected {FORMAT}")
    present = set(files) - {PACKAGE_FILE}
    if set(listed) != present:
        raise IntegrityError(
            f"{where}: files {sorted(present ^ set(listed))} are in the archive or package.json "
            "but not both: the package was modified"
        )
    digests = {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != PACKAGE_FILE}
    for n, digest in sorted(digests.items()):
        if listed[n] != digest:
            raise IntegrityError(f"{where}: file {n} does not match package.json: it was modified")
        if n == "manifest.json":
            continue
        entry = manifest_files.get(n)
        if entry is None or entry.get("sha256") != digest or entry.get("size") != len(files[n]):
            raise IntegrityError(
                f"{where}: file {n} does not match the build manifest: it was modified"
            )
    if artifacts.build_id(digests, inputs) != bid or manifest.get("build_id") != bid:
        raise IntegrityError(f"{where} does not hash to its build id {bid[:12]}: it was modified")
    return OpenedPackage(name, version, package_id, bid, files)
