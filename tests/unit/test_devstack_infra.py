"""Pure helpers of devstack (kafka, ferretdb, processes): generated configs, argv, parsing, PID-file hygiene."""

from __future__ import annotations

import os
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


def test_the_ferretdb_patches_rewrite_exactly_the_expected_lines(tmp_path):
    sources: dict[str, str] = {}
    for relative, before, _after in ferretdb.FERRETDB_PATCHES:
        sources[relative] = sources.get(relative, "package x\n") + f"\t{before}\n"
    for relative, text in sources.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ferretdb.patch_ferretdb(tmp_path)
    for relative, before, after in ferretdb.FERRETDB_PATCHES:
        text = (tmp_path / relative).read_text()
        assert after in text
        assert text.count(before) == after.count(before)  # replaced, not appended
    for relative, content in ferretdb.FERRETDB_NEW_FILES.items():
        assert (tmp_path / relative).read_text() == content


def test_a_ferretdb_source_that_changed_is_refused_rather_than_half_patched(tmp_path):
    for relative, _before, _after in ferretdb.FERRETDB_PATCHES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("package x\n")
    with pytest.raises(processes.InfraError, match="expected text not found"):
        ferretdb.patch_ferretdb(tmp_path)


def test_a_live_process_counts_as_alive_and_a_finished_one_does_not():
    import subprocess

    assert processes._alive(os.getpid())
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert not processes._alive(finished.pid)
