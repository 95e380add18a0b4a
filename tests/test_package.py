"""`pipeline package` and `open_package`: reproducible archives, sealed versions, safe opening."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO, event, invoke_isolated
from tests.conftest import run_fresh as run_cli

from pipeline.errors import IntegrityError
from pipeline.package import archive_bytes, open_package

TITANIC = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "5"}


def _train(cli: Any, store: Path, **env: str) -> str:
    id_file = store.parent / "build-id"
    result = cli("train", "--id-file", str(id_file), env={**TITANIC, **env})
    assert result.exit_code == 0, result.output
    return id_file.read_text().strip()


def _package(cli: Any, store: Path, *args: str, **env: str) -> tuple[str, Any]:
    id_file = store.parent / "package-id"
    id_file.unlink(missing_ok=True)
    result = cli("package", *args, "--id-file", str(id_file), env={**TITANIC, **env})
    assert result.exit_code == 0, result.output
    return id_file.read_text().strip(), result


def _archive(store: Path, name: str = "titanic", version: str = "0.1.0") -> Path:
    return store / "packages" / name / f"{version}.tar.gz"


def _members(data: bytes) -> dict[str, bytes]:
    """Every regular member of an archive, by its full name."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member)
            if member.isreg() and fh is not None:
                out[member.name] = fh.read()
    return out


def _rebuild(members: dict[str, bytes], top: str = "titanic-0.1.0") -> bytes:
    """The same archive layout around (possibly modified) member bytes."""
    return archive_bytes({name.split("/", 1)[1]: data for name, data in members.items()}, top)


def _crafted(tmp_path: Path, *infos: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    """A hand-made .tar.gz holding exactly the given headers (and data for regular files)."""
    path = tmp_path / "crafted.tar.gz"
    with tarfile.open(path, mode="w:gz") as tar:
        for info, data in infos:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@dataclass(frozen=True)
class Sealed:
    """A store holding one trained titanic build and its package, and what `package` printed."""

    store: Path
    build_id: str
    package_id: str
    package_stdout: str


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    """`train` then `package`, once per module (and xdist worker); tests never change this
    store: they read it or work on a copy (`packaged`)."""
    root = tmp_path_factory.mktemp("sealed")
    trained = invoke_isolated("train", "--id-file", str(root / "build-id"), root=root, env=TITANIC)
    assert trained.exit_code == 0, trained.output
    result = invoke_isolated(
        "package", "--id-file", str(root / "package-id"), root=root, env=TITANIC
    )
    assert result.exit_code == 0, result.output
    return Sealed(
        root / "store",
        (root / "build-id").read_text().strip(),
        (root / "package-id").read_text().strip(),
        result.stdout,
    )


@pytest.fixture
def packaged(sealed: Sealed, store: Path) -> tuple[str, str, bytes]:
    """A trained titanic build and its package, copied into this test's store:
    (build id, package id, archive bytes)."""
    shutil.copytree(sealed.store, store)
    return sealed.build_id, sealed.package_id, _archive(store).read_bytes()


@pytest.mark.slow
def test_package_twice_is_byte_identical_and_reports_its_id(
    cli: Any, store: Path, sealed: Sealed, packaged: tuple[str, str, bytes]
) -> None:
    """Packaging one build twice gives the same bytes; --id-file and the summary give its sha256."""
    build_id, first_id, first = packaged
    assert first_id == hashlib.sha256(first).hexdigest()
    summary = event(sealed.package_stdout, "package.summary")
    assert summary["name"] == "titanic" and summary["version"] == "0.1.0"
    assert summary["package_id"] == first_id and summary["build_id"] == build_id
    assert summary["path"] == str(_archive(sealed.store)) and summary["bytes"] == len(first)
    record = json.loads((store / "packages" / "titanic" / "0.1.0.json").read_text())
    assert record == {
        "name": "titanic",
        "version": "0.1.0",
        "package_id": first_id,
        "build_id": build_id,
    }

    # Sealed again (a fresh archive is built, compared and found identical): same id and bytes.
    second_id, _ = _package(cli, store, build_id[:12])
    assert second_id == first_id and _archive(store).read_bytes() == first


@pytest.mark.slow
def test_archive_headers_carry_no_time_owner_or_name(packaged: tuple[str, str, bytes]) -> None:
    """Every tar header is normalised, run.json is left out and the gzip header has no name/time."""
    build_id, _, data = packaged
    assert data[3] == 0, "gzip FLG must be 0 (no file name, no comment)"
    assert data[4:8] == b"\0\0\0\0", "gzip MTIME must be 0"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and names[0] == "titanic-0.1.0"
    assert {n.split("/", 1)[-1] for n in names[1:]} == {
        "weights.pt",
        "model.json",
        "preprocessing.json",
        "schema.json",
        "history.json",
        "metrics.json",
        "config.json",
        "provenance.json",
        "manifest.json",
        "package.json",
        # the plot data of a binary build travels with it: a release can be reported on
        "curve_roc.json",
        "curve_pr.json",
        "curve_calibration.json",
        "curve_threshold_sweep.json",
    }
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert (m.isdir() and m.mode == 0o755) or (m.isreg() and m.mode == 0o644)
    meta = json.loads(_members(data)["titanic-0.1.0/package.json"])
    assert meta["format"] == 1 and meta["build_id"] == build_id
    assert "run.json" not in meta["files"]
    manifest = json.loads(_members(data)["titanic-0.1.0/manifest.json"])
    assert manifest["build_id"] == build_id and "run.json" not in manifest["files"]


@pytest.mark.slow
def test_separate_processes_from_scratch_give_identical_packages(tmp_path: Path) -> None:
    """Train + package in two fresh stores by real processes gives byte-identical packages."""
    env = {
        **TITANIC,
        "PIPELINE_TRAIN__MAX_EPOCHS": "3",
        "PIPELINE_LOG_FORMAT": "json",
        "PIPELINE_CONFIG_DIR": str(REPO / "config"),
        "PIPELINE_ENV_FILE": os.devnull,
    }
    ids, archives = [], []
    for name in ("a", "b"):
        store = tmp_path / f"store-{name}"
        full = {**env, "PIPELINE_STORE": str(store)}
        for command in ("train", "package"):
            id_file = str(tmp_path / f"{name}.id")
            done = run_cli(command, "--id-file", id_file, env=full, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
        ids.append((tmp_path / f"{name}.id").read_text().strip())
        archives.append(_archive(store).read_bytes())
    assert ids[0] == ids[1] == hashlib.sha256(archives[0]).hexdigest()
    assert archives[0] == archives[1]


@pytest.mark.slow
def test_version_reuse_with_other_content_is_refused(
    cli: Any, store: Path, packaged: tuple[str, str, bytes]
) -> None:
    """Another build under a packaged version exits 3 in one line; the same build again succeeds."""
    first_build, first_id, original = packaged

    other_build = _train(cli, store, PIPELINE_SEED="7")
    assert other_build != first_build
    result = cli("package", env=TITANIC)
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"error: model titanic version 0.1.0 is already packaged with different content "
        f"(package {first_id[:12]}): bump PIPELINE_MODEL__VERSION"
    )
    assert event(result.stdout, "error")["exit_code"] == 3
    assert _archive(store).read_bytes() == original
    tmp = store / "tmp"
    assert not any(tmp.iterdir()), list(tmp.iterdir())

    again_id, _ = _package(cli, store, first_build)
    assert again_id == first_id

    bumped_id, _ = _package(cli, store, PIPELINE_MODEL__VERSION="0.2.0")
    assert bumped_id != first_id and _archive(store, version="0.2.0").is_file()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_MODEL__NAME", "Titanic"),
        ("PIPELINE_MODEL__NAME", "../evil"),
        ("PIPELINE_MODEL__NAME", "-titanic"),
        ("PIPELINE_MODEL__VERSION", "1.0"),
        ("PIPELINE_MODEL__VERSION", "v1.0.0"),
        ("PIPELINE_MODEL__VERSION", "01.0.0"),
        ("PIPELINE_MODEL__VERSION", "1.0.0/../../x"),
    ],
)
def test_invalid_name_or_version_exits_3(cli: Any, store: Path, variable: str, value: str) -> None:
    """A name or version unfit for a package file name is a config error naming its variable."""
    result = cli("package", env={**TITANIC, variable: value})
    assert result.exit_code == 3, result.output
    assert variable in result.stderr and result.stderr.count("\n") == 1
    assert not (store / "packages").exists()


@pytest.mark.slow
def test_prerelease_version_is_accepted(
    cli: Any, store: Path, packaged: tuple[str, str, bytes]
) -> None:
    """A semantic version with a pre-release tag is a valid package version."""
    _package(cli, store, PIPELINE_MODEL__VERSION="1.0.0-rc.1")
    assert _archive(store, version="1.0.0-rc.1").is_file()


@pytest.mark.slow
def test_open_package_verifies_and_extracts(
    packaged: tuple[str, str, bytes], store: Path, tmp_path: Path
) -> None:
    """A good package opens with the right ids and extracts exactly its verified files."""
    build_id, package_id, _ = packaged
    opened = open_package(_archive(store))
    assert (opened.name, opened.version) == ("titanic", "0.1.0")
    assert (opened.package_id, opened.build_id) == (package_id, build_id)
    assert opened.json("package.json")["build_id"] == build_id
    folder = opened.extract(tmp_path / "out")
    assert folder == tmp_path / "out" / "titanic-0.1.0"
    build = store / "builds" / build_id
    for name, content in opened.files.items():
        assert (folder / name).read_bytes() == content
        if name not in ("package.json", "manifest.json", "provenance.json"):
            assert (build / name).read_bytes() == content
    # provenance.json is sealed without the build's environment (CPU, threads, git state).
    recorded = json.loads((build / "provenance.json").read_text())
    assert json.loads(opened.files["provenance.json"]) == {"inputs": recorded["inputs"]}
    sealed = json.loads(opened.files["manifest.json"])
    kept = json.loads((build / "manifest.json").read_text())["files"]
    assert sealed["files"].keys() == kept.keys() - {"run.json"}
    assert all(sealed["files"][n] == kept[n] for n in kept.keys() - {"run.json", "provenance.json"})


MEMBERS = [
    "weights.pt",
    "model.json",
    "preprocessing.json",
    "schema.json",
    "history.json",
    "metrics.json",
    "config.json",
    "provenance.json",
    "manifest.json",
    "package.json",
]


@pytest.mark.slow
@pytest.mark.parametrize("member", MEMBERS)
def test_one_flipped_byte_in_any_member_is_refused(
    packaged: tuple[str, str, bytes], tmp_path: Path, member: str
) -> None:
    """Flipping one byte of any member makes open_package raise IntegrityError."""
    _, _, data = packaged
    members = _members(data)
    full = f"titanic-0.1.0/{member}"
    body = bytearray(members[full])
    body[len(body) // 2] ^= 0x01
    members[full] = bytes(body)
    path = tmp_path / "flipped.tar.gz"
    path.write_bytes(_rebuild(members))
    with pytest.raises(IntegrityError):
        open_package(path)


@pytest.mark.slow
def test_rewritten_package_json_is_caught_by_the_build_manifest(
    packaged: tuple[str, str, bytes], tmp_path: Path
) -> None:
    """A modified file with a recomputed package.json still fails against the build's manifest."""
    _, _, data = packaged
    members = _members(data)
    members["titanic-0.1.0/model.json"] += b" "
    meta = json.loads(members["titanic-0.1.0/package.json"])
    meta["files"]["model.json"] = hashlib.sha256(members["titanic-0.1.0/model.json"]).hexdigest()
    members["titanic-0.1.0/package.json"] = json.dumps(meta).encode()
    path = tmp_path / "forged.tar.gz"
    path.write_bytes(_rebuild(members))
    with pytest.raises(IntegrityError, match="build manifest"):
        open_package(path)


@pytest.mark.slow
def test_missing_required_file_is_refused(packaged: tuple[str, str, bytes], tmp_path: Path) -> None:
    """A package without its weights (and package.json rewritten to match) is refused."""
    _, _, data = packaged
    members = _members(data)
    del members["titanic-0.1.0/weights.pt"]
    meta = json.loads(members["titanic-0.1.0/package.json"])
    del meta["files"]["weights.pt"]
    members["titanic-0.1.0/package.json"] = json.dumps(meta).encode()
    path = tmp_path / "partial.tar.gz"
    path.write_bytes(_rebuild(members))
    with pytest.raises(IntegrityError, match=r"weights\.pt"):
        open_package(path)


def _link(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "make"),
    [
        ("tar-slip", lambda root: _file("../evil", b"pwned")),
        ("nested tar-slip", lambda root: _file("titanic-0.1.0/../../evil", b"pwned")),
        ("absolute", lambda root: _file(str(root / "evil"), b"pwned")),
        ("symlink", lambda root: _link("titanic-0.1.0/evil", tarfile.SYMTYPE, str(root / "evil"))),
        ("hardlink", lambda root: _link("titanic-0.1.0/evil", tarfile.LNKTYPE, "/etc/passwd")),
        ("fifo", lambda root: _link("titanic-0.1.0/evil", tarfile.FIFOTYPE)),
        ("device", lambda root: _link("titanic-0.1.0/evil", tarfile.CHRTYPE)),
        ("second top folder", lambda root: _file("other/evil", b"pwned")),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(
    packaged: tuple[str, str, bytes], tmp_path: Path, label: str, make: Any
) -> None:
    """Tar-slip, absolute, link, device and stray members raise IntegrityError naming the member."""
    _, _, data = packaged
    root = tmp_path / "outside"
    root.mkdir()
    good = [_file(name, body) for name, body in _members(data).items()]
    bad_info, bad_data = make(root)
    path = _crafted(tmp_path, *good, (bad_info, bad_data))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(IntegrityError) as raised:
        open_package(path).extract(target)
    assert bad_info.name in str(raised.value) or "top folders" in str(raised.value), label
    assert list(target.iterdir()) == [] and list(root.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_oversized_member_is_refused_from_its_header(tmp_path: Path) -> None:
    """A member whose header claims more than the size bound is refused before it is read."""
    path = tmp_path / "big.tar"
    info = tarfile.TarInfo("titanic-0.1.0/weights.pt")
    info.size = (2 << 30) + 1
    # Only the header is written: the bound must trip on the declared size alone.
    raw = io.BytesIO()
    raw.write(info.tobuf(format=tarfile.PAX_FORMAT))
    path.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(IntegrityError, match=r"weights\.pt"):
        open_package(path)


def test_a_decompression_bomb_is_refused_before_it_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip that inflates past the bound is refused while inflating, not after."""
    import zlib

    from pipeline import package as package_mod

    monkeypatch.setattr(package_mod, "MAX_TOTAL_BYTES", 8 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(deflate.compress(b"\0" * (1 << 22)) for _ in range(64)) + deflate.flush()
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(bomb)  # ~260 KB that would inflate to 256 MiB
    with pytest.raises(IntegrityError, match="decompression bomb"):
        package_mod.open_package(path)


@pytest.mark.slow
def test_predict_refuses_a_tar_slip_and_a_bomb_writing_nothing_anywhere(
    packaged: tuple[str, str, bytes],
    cli: Any,
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the command users run, `predict --package` on a tar-slip archive and on a
    decompression bomb exits 7 with one line, and no file appears or changes anywhere under the
    test's folder (the store included). (`release create` takes only archives in the store.)"""
    import zlib

    from pipeline import package as package_mod

    # A lower bound keeps the bomb small to build; the real one (2 GiB) works the same way.
    monkeypatch.setattr(package_mod, "MAX_TOTAL_BYTES", 8 << 20)
    _, _, data = packaged
    good = [_file(name, body) for name, body in _members(data).items()]
    slip = _crafted(tmp_path, *good, _file("titanic-0.1.0/../../../evil", b"pwned"))
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = tmp_path / "bomb.tar.gz"  # ~64 KB that inflates to 64 MiB, past the bound
    bomb.write_bytes(
        b"".join(deflate.compress(b"\0" * (1 << 20)) for _ in range(64)) + deflate.flush()
    )
    source = REPO / "src" / "pipeline" / "datasets" / "titanic.csv"

    def snapshot() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    before = snapshot()
    for archive in (slip, bomb):
        args = ("predict", "--package", str(archive), str(source), "-o", str(tmp_path / "o.csv"))
        result = cli(*args, env=TITANIC)
        assert result.exit_code == 7, (archive, result.output)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
        assert snapshot() == before, archive
    assert not list(tmp_path.parent.glob("evil")) and not (tmp_path / "evil").exists()


def test_a_bare_package_of_another_models_latest_build_is_refused(cli: Any, store: Path) -> None:
    """The latest build is Titanic's; `pipeline package` under the house-prices preset (no BUILD)
    sealed it as house-prices, which `release create` then put in production. Refused (exit 3)
    naming what differs; naming the build packages it, as asked."""
    titanic = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}
    build = event(cli("train", env=titanic).stdout, "train.summary")["build_id"]
    house = {"PIPELINE_PRESET": "house-prices", "PIPELINE_MODEL__VERSION": "0.4.0"}
    refused = cli("package", env=house)
    assert refused.exit_code == 3, refused.output
    assert f"the latest build {build[:12]} has data source 'builtin://titanic'" in refused.stderr
    assert "target 'survived', not 'SalePrice'" in refused.stderr
    assert not (store / "packages").exists()
    assert cli("package", env={"PIPELINE_PRESET": "titanic"}).exit_code == 0
    assert cli("package", build[:8], env=house).exit_code == 0


def test_a_build_of_other_data_is_not_packaged_under_the_default_name(
    cli: Any, store: Path
) -> None:
    """`PIPELINE_PRESET=titanic pipeline train`, then `pipeline package BUILD` with no preset:
    the Titanic build was sealed as house-prices 0.1.0, the default model name. Refused (exit
    3) naming the data and the setting; a name set anywhere packages it, as asked."""
    titanic = {"PIPELINE_PRESET": "titanic", "PIPELINE_TRAIN__MAX_EPOCHS": "2"}
    build = event(cli("train", env=titanic).stdout, "train.summary")["build_id"]
    refused = cli("package", build[:8])
    assert refused.exit_code == 3, refused.output
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.output
    assert "predicts target 'survived', not 'SalePrice'" in refused.stderr
    assert "no PIPELINE_MODEL__NAME is set" in refused.stderr
    assert not (store / "packages").exists()
    named = cli("package", build[:8], env={"PIPELINE_MODEL__NAME": "survival"})
    assert named.exit_code == 0, named.output
    assert (store / "packages" / "survival" / "0.1.0.tar.gz").exists()
    assert cli("package", build[:8], env={"PIPELINE_PRESET": "titanic"}).exit_code == 0
