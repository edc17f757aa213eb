"""The local Kafka broker: 4.1.1 in KRaft mode (combined broker and controller) on 127.0.0.1.

Its jars are fetched with Maven into .local/kafka/libs; its data stays in .local/kafka/data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from devstack.processes import (
    KAFKA_DIR,
    KAFKA_PROPERTIES,
    LOG_DIR,
    InfraError,
    port_open,
    require_tool,
    run_logged,
    say,
    spawn,
    start,
    stop,
)
from shared.config import LOCAL_DIR, Settings, load_settings

KAFKA_VERSION = "4.1.1"
KAFKA_LIBS = KAFKA_DIR / "libs"
KAFKA_DATA = KAFKA_DIR / "data"
KAFKA_LOG4J = KAFKA_DIR / "log4j2.yaml"

POM_XML = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version>
    </dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>2.24.3</version></dependency>
  </dependencies>
</project>
"""
LOG4J2_YAML = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


def kafka_address(bootstrap_servers: str) -> tuple[str, int]:
    """Return host and port of the first bootstrap server."""
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    return host or "127.0.0.1", int(port or 9092)


def server_properties(port: int, controller_port: int, data_dir: Path, partitions: int) -> str:
    return f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def java_major_version(version_output: str) -> int:
    """Parse ``java -version`` output ("1.8.0_412" -> 8, "17.0.15" -> 17); 0 when unrecognised."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def kafka_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    from confluent_kafka.admin import AdminClient

    host, port = kafka_address(bootstrap)
    if not port_open(port, host):
        return False
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return False


def _java_cmd(*args: str, jvm: Sequence[str] = ()) -> list[str]:
    return ["java", *jvm, f"-Dlog4j2.configurationFile={KAFKA_LOG4J}", "-cp", f"{KAFKA_LIBS}/*", *args]


def _prepare_kafka(port: int, partitions: int) -> None:
    java = subprocess.run([require_tool("java", "install a JDK 17+"), "-version"], capture_output=True, text=True)
    if java_major_version(java.stderr + java.stdout) < 17:
        found = (java.stderr.strip() or java.stdout.strip() or "?").splitlines()[0]
        raise InfraError(f"Kafka {KAFKA_VERSION} needs Java 17+ on PATH, found: {found}")
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    if not (KAFKA_LIBS / ".complete").exists():
        mvn = require_tool("mvn", "install Apache Maven to fetch the Kafka jars")
        say(f"kafka: fetching Kafka {KAFKA_VERSION} jars with Maven into {KAFKA_LIBS} ...")
        (KAFKA_DIR / "pom.xml").write_text(POM_XML)
        shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
        cmd = [mvn, "-B", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"]
        cmd += [
            f"-DoutputDirectory={KAFKA_LIBS}",
            "-DincludeScope=runtime",
            f"-Dmaven.repo.local={LOCAL_DIR / 'm2'}",
        ]
        run_logged(cmd, LOG_DIR / "build-kafka.log", "maven", "files downloaded", lambda ln: "Downloaded from" in ln)
        (KAFKA_LIBS / ".complete").write_text(f"{KAFKA_VERSION}\n")
    KAFKA_LOG4J.write_text(LOG4J2_YAML)
    KAFKA_PROPERTIES.write_text(server_properties(port, port + 1, KAFKA_DATA, partitions))
    if not (KAFKA_DATA / "meta.properties").exists():
        say("kafka: formatting storage ...")
        uuid = subprocess.run(_java_cmd("kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True)
        cluster_id = (uuid.stdout.strip().splitlines() or [""])[-1].strip()
        if uuid.returncode != 0 or not cluster_id:
            raise InfraError(f"kafka-storage random-uuid failed: {uuid.stderr.strip()}")
        fmt = _java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(KAFKA_PROPERTIES))
        done = subprocess.run(fmt, capture_output=True, text=True)
        if done.returncode != 0:
            raise InfraError(f"kafka storage format failed: {done.stdout.strip()} {done.stderr.strip()}")


def start_kafka(settings: Settings | None = None, timeout: float = 90.0) -> int | None:
    """Start our broker unless it answers already; wait until it does.

    Returns our broker's PID, or None when a broker we did not start answers on the port.
    """
    settings = settings or load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    port = kafka_address(bootstrap)[1]

    def prepare() -> int:
        _prepare_kafka(port, settings.kafka.topic_partitions)
        jvm = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC")
        return spawn("kafka", _java_cmd("kafka.Kafka", str(KAFKA_PROPERTIES), jvm=jvm))

    return start("kafka", (port, port + 1), lambda: kafka_answers(bootstrap), prepare, timeout)


def stop_kafka(timeout: float = 20.0) -> int | None:
    """Stop the broker we started (by its PID file); return its PID, or None if it was not running."""
    return stop("kafka", timeout)
