"""Pure helpers of devstack (kafka, ferretdb, processes): generated configs, argv, parsing, PID-file hygiene."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from devstack import ferretdb, kafka, processes


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_server_properties_binds_loopback_with_controller_port() -> None:
    props = _properties(kafka.server_properties(9092, 9093, Path("/data/kafka"), 6))

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == "/data/kafka"
    assert props["num.partitions"] == "6"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["share.coordinator.state.topic.min.isr"] == "1"


def test_ferretdb_argv_uses_sqlite_auth_and_keeps_password_out() -> None:
    argv = ferretdb.ferretdb_argv(Path("/b/ferretdb"), 27017, Path("/d"), Path("/s"), "ecommerce")

    assert argv[0] == "/b/ferretdb"
    assert "--handler=sqlite" in argv
    assert "--sqlite-url=file:/d/?_pragma=synchronous(NORMAL)" in argv
    assert "--listen-addr=127.0.0.1:27017" in argv
    assert "--state-dir=/s" in argv
    assert "--test-enable-new-auth" in argv
    assert "--setup-username=ecommerce" in argv
    assert "--setup-database=admin" in argv
    assert not any(arg.startswith("--setup-password") for arg in argv)


def test_pom_pins_slf4j2_and_kafka() -> None:
    assert "<artifactId>kafka_2.13</artifactId>" in kafka.POM_XML
    assert f"<version>{kafka.KAFKA_VERSION}</version>" in kafka.POM_XML
    assert "<artifactId>slf4j-api</artifactId><version>2.0.17</version>" in kafka.POM_XML


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [("127.0.0.1:9092", ("127.0.0.1", 9092)), ("localhost:19092,other:9092", ("localhost", 19092))],
)
def test_kafka_address(bootstrap: str, expected: tuple[str, int]) -> None:
    assert kafka.kafka_address(bootstrap) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mongodb://127.0.0.1:27017/?authSource=admin", ("127.0.0.1", 27017)),
        ("mongodb://user:p%40ss@db.local:27117/app", ("db.local", 27117)),
        ("mongodb://h1:1,h2:2", ("h1", 1)),
        ("mongodb://localhost", ("localhost", 27017)),
    ],
)
def test_mongo_address(uri: str, expected: tuple[str, int]) -> None:
    assert ferretdb.mongo_address(uri) == expected


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_412"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", 0),
    ],
)
def test_java_major_version(output: str, major: int) -> None:
    assert kafka.java_major_version(output) == major


def test_stale_pid_file_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RUN_DIR", tmp_path)
    # A live process (this test) that is not our broker: its PID file is stale.
    processes.pid_file("kafka").write_text(f"{os.getpid()}\n")

    assert processes.running_pid("kafka") is None
    assert not processes.pid_file("kafka").exists()
    assert processes.is_running("kafka") is False


def test_pid_file_of_our_process_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RUN_DIR", tmp_path)
    # A live process whose command line contains the marker path is "ours".
    monkeypatch.setitem(processes.MARKERS, "mongo", psutil.Process().cmdline()[0])
    processes.pid_file("mongo").write_text(f"{os.getpid()}\n")

    assert processes.running_pid("mongo") == os.getpid()


def pinned_ferretdb_source() -> Path:
    """The pinned FerretDB source in Go's module cache (read-only), where `make infra-up` downloaded it."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` on PATH, so no FerretDB source to patch")
    cache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    source = Path(cache, "github.com", "!ferret!d!b", f"!ferret!d!b@{ferretdb.FERRETDB_VERSION}")
    if not source.is_dir():
        pytest.skip(f"FerretDB {ferretdb.FERRETDB_VERSION} is not in the Go module cache (`make infra-up` fetches it)")
    return source


def patched_paths(patch: Path) -> list[str]:
    return [line[len("+++ b/") :] for line in patch.read_text().splitlines() if line.startswith("+++ b/")]


def one_line_patch(path: str, before: str, after: str) -> str:
    return f"why\n\n--- a/{path}\n+++ b/{path}\n@@ -1,2 +1,2 @@\n package a\n-{before}\n+{after}\n"


def write_patch_dir(root: Path, patches: dict[str, str], files: dict[str, str]) -> Path:
    for name, text in patches.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for relative, text in files.items():
        (root / "files" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "files" / relative).write_text(text)
    return root


def test_each_ferretdb_patch_says_what_it_fixes_and_is_a_unified_diff_from_the_source_root() -> None:
    patches = ferretdb.ferretdb_patches()
    assert [p.name[:4] for p in patches] == ["0001", "0002", "0003", "0004"]
    for patch in patches:
        text = patch.read_text()
        description = text.split("\n--- a/", 1)[0]
        assert "test_ferretdb_patches.py" in description
        assert patched_paths(patch) and all(path.startswith("internal/") for path in patched_paths(patch))
    assert ferretdb.ferretdb_new_files() == [Path("internal/handler/collection_write_locks.go")]


def test_the_ferretdb_patches_apply_exactly_to_the_pinned_source(tmp_path: Path) -> None:
    source = pinned_ferretdb_source()
    touched = {path for patch in ferretdb.ferretdb_patches() for path in patched_paths(patch)}
    for relative in touched:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, tmp_path / relative)

    ferretdb.patch_ferretdb(tmp_path)

    assert all((tmp_path / relative).read_bytes() != (source / relative).read_bytes() for relative in touched)
    update = (tmp_path / "internal/handler/msg_update.go").read_text()
    assert "unlock := lockCollectionWrites(params.DB, params.Collection)" in update
    assert "defer closer.Close()" not in update
    added = ferretdb.PATCH_DIR / "files" / "internal/handler/collection_write_locks.go"
    assert (tmp_path / "internal/handler/collection_write_locks.go").read_bytes() == added.read_bytes()
    leftovers = [p.name for p in tmp_path.rglob("*") if p.suffix in (".orig", ".rej")]
    assert leftovers == []


def test_patches_apply_in_name_order_and_added_files_are_copied_in(tmp_path: Path) -> None:
    patch_dir = write_patch_dir(
        tmp_path / "patches",
        {
            # The second patch needs the first one's line, so only name order applies both.
            "0002-second.patch": one_line_patch("pkg/a.go", "var x = 2", "var x = 3"),
            "0001-first.patch": one_line_patch("pkg/a.go", "var x = 1", "var x = 2"),
        },
        {"pkg/added/b.go": "package added\n"},
    )
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg/a.go").write_text("package a\nvar x = 1\n")

    ferretdb.patch_ferretdb(src, patch_dir)

    assert (src / "pkg/a.go").read_text() == "package a\nvar x = 3\n"
    assert (src / "pkg/added/b.go").read_text() == "package added\n"


def test_a_ferretdb_source_that_changed_is_refused_naming_the_patch(tmp_path: Path) -> None:
    for relative in {path for patch in ferretdb.ferretdb_patches() for path in patched_paths(patch)}:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("package x\n")

    with pytest.raises(processes.InfraError, match=r"cannot apply 0001-.*FerretDB source changed"):
        ferretdb.patch_ferretdb(tmp_path)
    assert [p.name for p in tmp_path.rglob("*") if p.suffix in (".orig", ".rej")] == []


def test_the_build_stamp_changes_when_a_patch_or_an_added_file_changes(tmp_path: Path) -> None:
    patch_dir = tmp_path / "patches"
    shutil.copytree(ferretdb.PATCH_DIR, patch_dir)
    stamps = [ferretdb.ferretdb_build_stamp(patch_dir)]
    assert stamps[0] == ferretdb.ferretdb_build_stamp()  # by content, not by where the files are

    patch = ferretdb.ferretdb_patches(patch_dir)[-1]
    patch.write_text(patch.read_text() + " \n")
    stamps.append(ferretdb.ferretdb_build_stamp(patch_dir))
    added = patch_dir / "files" / ferretdb.ferretdb_new_files(patch_dir)[0]
    added.write_text(added.read_text() + "// changed\n")
    stamps.append(ferretdb.ferretdb_build_stamp(patch_dir))
    (patch_dir / "0005-another.patch").write_text("")
    stamps.append(ferretdb.ferretdb_build_stamp(patch_dir))

    assert len(set(stamps)) == 4
    assert json.loads(stamps[0])["version"] == ferretdb.FERRETDB_VERSION


def test_a_live_process_counts_as_alive_and_a_finished_one_does_not():
    import subprocess

    assert processes._alive(os.getpid())
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert not processes._alive(finished.pid)
