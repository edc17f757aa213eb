"""Fetch, build, start and stop a local Kafka broker and FerretDB (MongoDB wire protocol) without Docker.

    python -m devstack.infra up|down|status

Kafka 4.1.1 (KRaft, combined broker+controller) runs from jars fetched with Maven; FerretDB v1.24.2
(SQLite backend, authentication on) is built from source with Go. Both bind to 127.0.0.1 and keep
their data under ``.local/``. Servers named by KAFKA_BOOTSTRAP_SERVERS / MONGO_URI are only checked.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
from pydantic import SecretStr

from shared.config import LOCAL_DIR, LOCAL_ENV_FILE, ConfigError, Settings, load_settings, read_env_file

KAFKA_VERSION = "4.1.1"
FERRETDB_VERSION = "v1.24.2"
KAFKA_DIR = LOCAL_DIR / "kafka"
KAFKA_LIBS = KAFKA_DIR / "libs"
KAFKA_DATA = KAFKA_DIR / "data"
KAFKA_PROPERTIES = KAFKA_DIR / "server.properties"
KAFKA_LOG4J = KAFKA_DIR / "log4j2.yaml"
FERRET_DIR = LOCAL_DIR / "ferretdb"
FERRET_BIN = FERRET_DIR / "bin" / "ferretdb"
FERRET_DATA = FERRET_DIR / "data"
FERRET_STATE = FERRET_DIR / "state"
RUN_DIR = LOCAL_DIR / "run"
LOG_DIR = LOCAL_DIR / "logs"
DATA_DIRS = {"kafka": KAFKA_DATA, "mongo": FERRET_DATA}
# A PID file only counts when the live process's command line contains this path.
MARKERS = {"kafka": str(KAFKA_PROPERTIES), "mongo": str(FERRET_BIN)}

# slf4j-api 2.x must be explicit: otherwise Maven resolves 1.7 and Kafka logs nothing.
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


class InfraError(Exception):
    """The local infrastructure could not be prepared, started or reached; the message says why."""


def say(message: str) -> None:
    print(message, flush=True)


# ---- pure helpers -------------------------------------------------------------------------------


def kafka_address(bootstrap_servers: str) -> tuple[str, int]:
    """Return host and port of the first bootstrap server."""
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    return host or "127.0.0.1", int(port or 9092)


def mongo_address(uri: str) -> tuple[str, int]:
    """Return host and port of the first host in a mongodb:// URI."""
    hosts = uri.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    host, _, port = hosts.split(",")[0].rpartition(":")
    return (host, int(port)) if host else (port, 27017)


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


def ferretdb_argv(binary: Path, port: int, data_dir: Path, state_dir: Path, username: str) -> list[str]:
    """FerretDB command line; the setup password goes in FERRETDB_SETUP_PASSWORD, not in argv (ps)."""
    return [
        str(binary),
        "--handler=sqlite",
        # WAL (FerretDB's default) with synchronous=NORMAL: a commit no longer waits for an fsync
        # (store_bench: 709 -> 881 round trips/s, 978 -> 1,579 with 4 clients). A killed process
        # loses nothing; only a power cut can lose the last commits, never corrupt the file.
        f"--sqlite-url=file:{data_dir}/?_pragma=synchronous(NORMAL)",
        f"--listen-addr=127.0.0.1:{port}",
        f"--state-dir={state_dir}",
        # LOCAL_FERRETDB_DEBUG_ADDR=127.0.0.1:27018 serves /debug/pprof (CPU profiles of the store).
        f"--debug-addr={os.environ.get('LOCAL_FERRETDB_DEBUG_ADDR', '-')}",
        "--telemetry=disable",
        "--test-enable-new-auth",
        f"--setup-username={username}",
        "--setup-database=admin",
        "--log-level=error",
    ]


def java_major_version(version_output: str) -> int:
    """Parse ``java -version`` output ("1.8.0_412" -> 8, "17.0.15" -> 17); 0 when unrecognised."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


# ---- processes ----------------------------------------------------------------------------------


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def log_file(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def running_pid(name: str) -> int | None:
    """PID of our live server process; a PID file naming anything else is stale and removed."""
    path = pid_file(name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and MARKERS[name] in " ".join(proc.cmdline()):
            return pid
    except psutil.NoSuchProcess:
        pass
    except psutil.Error:
        # Could not look at it right now: keep the file, or the server would be orphaned.
        return pid
    path.unlink(missing_ok=True)
    return None


def is_running(name: str) -> bool:
    """True when our ``kafka`` or ``mongo`` process is alive (it may still be starting)."""
    return running_pid(name) is not None


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with log_file(name).open("a") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} devstack starting {name}\n")
        log.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _stop(name: str, timeout: float = 20.0) -> int | None:
    """SIGTERM our process (SIGKILL after ``timeout``); return its PID, or None if none was running."""
    pid = running_pid(name)
    if pid is None:
        return None
    proc = psutil.Process(pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        say(f"{name}: pid {pid} still alive after {timeout:.0f} s, sending SIGKILL")
        proc.kill()
        proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    pid_file(name).unlink(missing_ok=True)
    return pid


def crash(name: str, timeout: float = 10.0) -> int | None:
    """SIGKILL our ``kafka`` or ``mongo`` process, as a power cut would stop it; return its PID, or
    None if it was not running (for the chaos suite: a fault that did not happen must be seen)."""
    pid = running_pid(name)
    if pid is None:
        return None
    proc = psutil.Process(pid)
    proc.kill()
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.wait(timeout)
    pid_file(name).unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a zombie does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # it exists, we just could not look at it


def _listening_ports(pid: int) -> set[int]:
    try:
        return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"}
    except psutil.Error:
        return set()


def _wait_ready(name: str, pid: int, ready: Callable[[], bool], timeout: float, spawned: bool) -> None:
    """Wait for ``ready``; on timeout stop the process only if this call ``spawned`` it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            pid_file(name).write_text(f"{pid}\n")  # a momentary check failure may have removed it
            return
        # Ask about the process itself: a transient failure to read its details is not an exit.
        if not _alive(pid):
            raise InfraError(f"{name} (pid {pid}) exited during startup; last log lines:\n{_tail(log_file(name))}")
        time.sleep(0.5)
    if spawned:
        _stop(name)
    raise InfraError(
        f"{name} (pid {pid}{', now stopped' if spawned else ''}) did not answer within {timeout:.0f} s; "
        f"last lines of {log_file(name)}:\n{_tail(log_file(name))}"
    )


def _run_logged(
    argv: Sequence[str],
    log: Path,
    label: str,
    unit: str,
    counted: Callable[[str], bool],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run a build step, appending its output to ``log``; every 10 s print how many lines were ``counted``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started, count = time.monotonic(), [0]
    with log.open("a") as out:
        out.write(f"\n==== {' '.join(argv)}\n")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                count[0] += counted(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while True:
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                say(f"  ... {label}: {time.monotonic() - started:.0f} s, {count[0]} {unit}")
        reader.join()
    if proc.returncode != 0:
        raise InfraError(f"{label} failed (exit {proc.returncode}); last lines of {log}:\n{_tail(log)}")
    say(f"  {label}: done in {time.monotonic() - started:.0f} s ({count[0]} {unit})")


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InfraError(f"`{tool}` not found on PATH; {hint}")
    return path


# ---- Kafka --------------------------------------------------------------------------------------


def _kafka_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    from confluent_kafka.admin import AdminClient

    host, port = kafka_address(bootstrap)
    if not _port_open(port, host):
        return False
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return False


def _java_cmd(*args: str, jvm: Sequence[str] = ()) -> list[str]:
    return ["java", *jvm, f"-Dlog4j2.configurationFile={KAFKA_LOG4J}", "-cp", f"{KAFKA_LIBS}/*", *args]


def _prepare_kafka(port: int, partitions: int) -> None:
    java = subprocess.run([_require("java", "install a JDK 17+"), "-version"], capture_output=True, text=True)
    if java_major_version(java.stderr + java.stdout) < 17:
        found = (java.stderr.strip() or java.stdout.strip() or "?").splitlines()[0]
        raise InfraError(f"Kafka {KAFKA_VERSION} needs Java 17+ on PATH, found: {found}")
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    if not (KAFKA_LIBS / ".complete").exists():
        mvn = _require("mvn", "install Apache Maven to fetch the Kafka jars")
        say(f"kafka: fetching Kafka {KAFKA_VERSION} jars with Maven into {KAFKA_LIBS} ...")
        (KAFKA_DIR / "pom.xml").write_text(POM_XML)
        shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
        cmd = [mvn, "-B", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"]
        cmd += [
            f"-DoutputDirectory={KAFKA_LIBS}",
            "-DincludeScope=runtime",
            f"-Dmaven.repo.local={LOCAL_DIR / 'm2'}",
        ]
        _run_logged(cmd, LOG_DIR / "build-kafka.log", "maven", "files downloaded", lambda ln: "Downloaded from" in ln)
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


def _start(
    name: str, ports: tuple[int, ...], answers: Callable[[], bool], prepare: Callable[[], int], timeout: float
) -> int | None:
    """Start server ``name`` with ``prepare`` (returns the PID) unless it answers; wait until it does."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (RUN_DIR / f"{name}.lock").open("w") as lock:  # one `up` at a time per server
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid, state = _start_locked(name, ports, answers, prepare)
    if state == "ready":
        return pid
    assert pid is not None
    started = time.monotonic()
    _wait_ready(name, pid, answers, timeout, spawned=state == "spawned")
    say(f"{name}: ready after {time.monotonic() - started:.1f} s")
    return pid


def _start_locked(
    name: str, ports: tuple[int, ...], answers: Callable[[], bool], prepare: Callable[[], int]
) -> tuple[int | None, str]:
    """Return the PID and "ready", "starting" (someone else started it) or "spawned" (we did)."""
    pid = running_pid(name)
    if pid is not None:
        if answers():
            say(f"{name}: already running (pid {pid}) on 127.0.0.1:{ports[0]}")
            return pid, "ready"
        listening = _listening_ports(pid)
        if listening and not listening & set(ports):
            raise InfraError(
                f"{name}: our process (pid {pid}) listens on {sorted(listening)}, not on "
                f"127.0.0.1:{ports[0]} (configuration changed?); run `down` first"
            )
        say(f"{name}: pid {pid} is still starting, waiting for 127.0.0.1:{ports[0]} ...")
        return pid, "starting"
    for port in ports:
        if _port_open(port):
            if port == ports[0] and answers():
                say(f"{name}: a server not started by devstack answers on 127.0.0.1:{port}; using it")
                return None, "ready"
            raise InfraError(f"{name}: port {port} on 127.0.0.1 is taken by a process that is not ours")
    pid = prepare()
    say(f"{name}: started pid {pid}, waiting for 127.0.0.1:{ports[0]} ...")
    return pid, "spawned"


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
        return _spawn("kafka", _java_cmd("kafka.Kafka", str(KAFKA_PROPERTIES), jvm=jvm))

    return _start("kafka", (port, port + 1), lambda: _kafka_answers(bootstrap), prepare, timeout)


def stop_kafka(timeout: float = 20.0) -> int | None:
    """Stop the broker we started (by its PID file); return its PID, or None if it was not running."""
    return _stop("kafka", timeout)


# ---- FerretDB -----------------------------------------------------------------------------------


def _mongo_check(settings: Settings) -> str | None:
    """None when an authenticated ping succeeds, otherwise the reason."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    mongo = settings.mongo
    auth = {"username": mongo.username, "password": mongo.password.get_secret_value()} if mongo.password else {}
    client: MongoClient = MongoClient(mongo.uri, serverSelectionTimeoutMS=1500, connectTimeoutMS=1500, **auth)
    try:
        client.admin.command("ping")
        return None
    except PyMongoError as err:
        return str(err).split(", full error")[0]
    finally:
        client.close()


# Two fixes to FerretDB 1.24's SQLite backend, applied to the downloaded source before building.
# Without them every update or delete by _id scans the whole table (80-100 ms per write at 20,000
# documents, measured), because (1) queries compare `_ferretdb_sjson->'$._id'` while the unique _id
# index is on `_ferretdb_sjson->"_id"`, so SQLite never uses it, and (2) the _id equality is pushed
# down only when it is the filter's sole key. The handlers re-check the whole filter in Go, so the
# pushed-down _id is only a pre-filter and results are unchanged. With them: ~1 ms per write.
FERRETDB_PATCHES = (
    (
        "internal/backends/sqlite/metadata/metadata.go",
        "IDColumn = DefaultColumn + \"->'$._id'\"",
        """IDColumn = DefaultColumn + `->"_id"`""",
    ),
    ("internal/backends/sqlite/collection.go", "if params.Filter.Len() == 1 {", "if params.Filter.Len() >= 1 {"),
    # FerretDB 1.24 runs update, findAndModify and delete as "query, change in Go, write back by _id"
    # with no transaction, so two concurrent updates of one document both match their filter and the
    # second write undoes the first (10 buyers of 5 units: 8 "succeeded", measured). These three
    # patches run them one at a time per collection (FERRETDB_NEW_FILES holds the lock), which makes
    # each one atomic, as in MongoDB. SQLite has a single writer anyway, so little is lost.
    (
        "internal/handler/msg_update.go",
        "\tmatched, modified, upserted, err := h.updateDocument(connCtx, params)\n",
        "\tunlock := lockCollectionWrites(params.DB, params.Collection)\n"
        "\tvar duplicates []int32 // statements that failed on a duplicate key, see below\n"
        "\tmatched, modified, upserted, err := h.updateDocument(connCtx, params, &duplicates)\n\tunlock()\n",
    ),
    # A multi-statement update (a bulk write) kept every statement's cursor, and so its SQLite
    # connection, open until the last statement: 100+ statements exhausted the database's pool of
    # 100 connections and deadlocked that database for every client (measured with a 400-document
    # bulk write). Each statement now closes its cursor when it is done.
    (
        "internal/handler/msg_update.go",
        "\t\tcloser := iterator.NewMultiCloser()\n\t\tdefer closer.Close()\n",
        "\t\tcloser := iterator.NewMultiCloser()\n",
    ),
    (
        "internal/handler/msg_update.go",
        '\t\tresult, err := common.UpdateDocument(ctx, c, "update", iter, &u)\n'
        "\t\tif err != nil {\n\t\t\treturn 0, 0, nil, lazyerrors.Error(err)\n\t\t}\n",
        '\t\tresult, err := common.UpdateDocument(ctx, c, "update", iter, &u)\n\t\tcloser.Close()\n'
        "\t\tif err != nil {\n"
        "\t\t\tvar be *backends.Error\n"
        "\t\t\tif errors.As(err, &be) && be.Code() == backends.ErrorCodeInsertDuplicateID {\n"
        "\t\t\t\t*duplicates = append(*duplicates, int32(i))\n"
        "\t\t\t\tif params.Ordered {\n\t\t\t\t\tbreak\n\t\t\t\t}\n"
        "\t\t\t\tcontinue\n"
        "\t\t\t}\n"
        "\t\t\treturn 0, 0, nil, lazyerrors.Error(err)\n\t\t}\n",
    ),
    # A duplicate key in one statement of a multi-statement update failed the whole command: the
    # statements after it never ran, even unordered, and the reply said the error was at index 0
    # and had no nModified (pymongo's bulk_write then raised KeyError). As in MongoDB, it now fails
    # that statement alone, reported at its own index; an ordered update stops there.
    (
        "internal/handler/msg_update.go",
        'import (\n\t"context"\n',
        'import (\n\t"context"\n\t"errors"\n',
    ),
    (
        "internal/handler/msg_update.go",
        '\tres.Set("nModified", modified)\n',
        '\tres.Set("nModified", modified)\n'
        "\tif len(duplicates) > 0 {\n"
        "\t\twriteErrors := types.MakeArray(len(duplicates))\n"
        "\t\tfor _, index := range duplicates {\n"
        "\t\t\twriteErrors.Append(must.NotFail(types.NewDocument(\n"
        '\t\t\t\t"index", index,\n'
        '\t\t\t\t"code", int32(handlererrors.ErrDuplicateKeyInsert),\n'
        '\t\t\t\t"errmsg", fmt.Sprintf(`E11000 duplicate key error collection: %s.%s`, params.DB, params.Collection),\n'
        "\t\t\t)))\n"
        "\t\t}\n"
        '\t\tres.Set("writeErrors", writeErrors)\n'
        "\t}\n",
    ),
    (
        "internal/handler/msg_update.go",
        "func (h *Handler) updateDocument(ctx context.Context, params *common.UpdateParams) "
        "(int32, int32, *types.Array, error) {\n",
        "func (h *Handler) updateDocument(ctx context.Context, params *common.UpdateParams, duplicates *[]int32) "
        "(int32, int32, *types.Array, error) {\n",
    ),
    (
        "internal/handler/msg_update.go",
        "\tfor _, u := range params.Updates {\n",
        "\tfor i, u := range params.Updates {\n",
    ),
    # An upsert was reported at the index of the upserts so far, not of its statement.
    ("internal/handler/msg_update.go", '"index", int32(upserted.Len()),', '"index", int32(i),'),
    # `ordered` was ignored (and so false): honour it, true by default as in MongoDB.
    ("internal/handler/common/update_params.go", '`ferretdb:"ordered,ignored"`', '`ferretdb:"ordered,opt"`'),
    (
        "internal/handler/common/update_params.go",
        "\tvar params UpdateParams\n",
        "\tparams := UpdateParams{Ordered: true}\n",
    ),
    (
        "internal/handler/msg_findandmodify.go",
        "\tres, err := h.findAndModifyDocument(connCtx, params)\n",
        "\tunlock := lockCollectionWrites(params.DB, params.Collection)\n"
        "\tres, err := h.findAndModifyDocument(connCtx, params)\n\tunlock()\n",
    ),
    (
        "internal/handler/msg_delete.go",
        "\t\td, err = h.execDelete(connCtx, c, &p)\n",
        "\t\tunlock := lockCollectionWrites(params.DB, params.Collection)\n"
        "\t\td, err = h.execDelete(connCtx, c, &p)\n\t\tunlock()\n",
    ),
)
FERRETDB_NEW_FILES = {
    "internal/handler/collection_write_locks.go": """package handler

import "sync"

// collectionWriteLocks holds one mutex per "db.collection"; added by kafka-ecommerce's build
// so that read-modify-write commands on one collection do not interleave.
var collectionWriteLocks sync.Map

// lockCollectionWrites locks the collection's mutex and returns its unlock function.
func lockCollectionWrites(db, collection string) func() {
\tm, _ := collectionWriteLocks.LoadOrStore(db+"."+collection, new(sync.Mutex))
\tmu := m.(*sync.Mutex)
\tmu.Lock()

\treturn mu.Unlock
}
""",
}
FERRET_STAMP = FERRET_DIR / "bin" / "build.stamp"


def ferretdb_build_stamp() -> str:
    """What the binary must have been built from: the version and the patches."""
    return json.dumps({"version": FERRETDB_VERSION, "patches": FERRETDB_PATCHES, "files": FERRETDB_NEW_FILES})


def patch_ferretdb(src: Path) -> None:
    """Apply FERRETDB_PATCHES to a FerretDB source tree; fail if the source is not what they expect."""
    for relative, before, after in FERRETDB_PATCHES:
        path = src / relative
        text = path.read_text()
        if before not in text:
            raise InfraError(f"cannot patch {relative}: expected text not found (FerretDB source changed?)")
        path.write_text(text.replace(before, after))
    for relative, content in FERRETDB_NEW_FILES.items():
        (src / relative).write_text(content)


def _build_ferretdb() -> None:
    go = _require("go", "install Go 1.24+ (https://go.dev/dl/) to build FerretDB")
    env = dict(os.environ)
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -mod=mod".strip()
    say(f"mongo: downloading FerretDB {FERRETDB_VERSION} source with `go mod download` ...")
    module = f"github.com/FerretDB/FerretDB@{FERRETDB_VERSION}"
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    dl = subprocess.run(
        [go, "mod", "download", "-json", module], capture_output=True, text=True, env=env, cwd=LOCAL_DIR
    )
    if dl.returncode != 0:
        raise InfraError(f"go mod download {module} failed: {dl.stdout.strip()} {dl.stderr.strip()}")
    src = FERRET_DIR / "src"
    if src.exists():
        _make_writable(src)
        shutil.rmtree(src)
    shutil.copytree(json.loads(dl.stdout)["Dir"], src)  # the module cache copy is read-only
    _make_writable(src)
    (src / "build" / "version" / "version.txt").write_text(f"{FERRETDB_VERSION}\n")  # else panics at start
    patch_ferretdb(src)
    say("mongo: building FerretDB (1-4 minutes on a fresh machine) ...")
    cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-o", str(FERRET_BIN), "./cmd/ferretdb"]
    counted = lambda ln: not ln.startswith(("go: ", "#"))  # noqa: E731  (go build -v prints each package)
    _run_logged(cmd, LOG_DIR / "build-ferretdb.log", "go build", "packages compiled", counted, cwd=src)
    FERRET_STAMP.write_text(ferretdb_build_stamp())


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


def ensure_credentials(settings: Settings | None = None) -> Settings:
    """Make sure Mongo credentials exist, generating and saving them to LOCAL_ENV_FILE the first time."""
    current = settings or load_settings()
    if current.mongo.username and current.mongo.password:
        return current
    existing = read_env_file(LOCAL_ENV_FILE)
    username = existing.get("MONGO_USERNAME") or current.mongo.username or "ecommerce"
    password = existing.get("MONGO_PASSWORD") or secrets.token_urlsafe(18)
    LOCAL_ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        ln
        for ln in (LOCAL_ENV_FILE.read_text().splitlines() if LOCAL_ENV_FILE.exists() else [])
        if not ln.startswith(("MONGO_USERNAME=", "MONGO_PASSWORD="))
    ]
    LOCAL_ENV_FILE.write_text("\n".join([*lines, f"MONGO_USERNAME={username}", f"MONGO_PASSWORD={password}", ""]))
    LOCAL_ENV_FILE.chmod(0o600)
    say(f"mongo: generated credentials for user {username!r} in {LOCAL_ENV_FILE}")
    if settings is None:
        return load_settings()
    mongo = settings.mongo.model_copy(update={"username": username, "password": SecretStr(password)})
    return settings.model_copy(update={"mongo": mongo})


def start_mongo(settings: Settings | None = None, timeout: float = 30.0) -> int | None:
    """Start our FerretDB unless it answers already; wait until an authenticated ping succeeds."""
    settings = ensure_credentials(settings)
    port = mongo_address(settings.mongo.uri)[1]

    def answers() -> bool:
        reason = _mongo_check(settings)
        if reason and "Authentication failed" in reason and is_running("mongo"):
            raise InfraError(
                f"mongo: FerretDB rejects user {settings.mongo.username!r}: its data was created with other "
                f"credentials (MONGO_USERNAME/MONGO_PASSWORD come from the environment, else {LOCAL_ENV_FILE})."
                f" Restore them, or delete {FERRET_DATA} and {FERRET_STATE} to start empty"
            )
        return reason is None

    def prepare() -> int:
        built = FERRET_STAMP.read_text() if FERRET_STAMP.exists() else ""
        if not FERRET_BIN.exists() or built != ferretdb_build_stamp():
            _build_ferretdb()
        FERRET_DATA.mkdir(parents=True, exist_ok=True)
        FERRET_STATE.mkdir(parents=True, exist_ok=True)
        argv = ferretdb_argv(FERRET_BIN, port, FERRET_DATA, FERRET_STATE, settings.mongo.username or "")
        password = settings.mongo.password.get_secret_value() if settings.mongo.password else ""
        return _spawn("mongo", argv, env={**os.environ, "FERRETDB_SETUP_PASSWORD": password})

    return _start("mongo", (port,), answers, prepare, timeout)


def stop_mongo(timeout: float = 20.0) -> int | None:
    """Stop the FerretDB we started (by its PID file); return its PID, or None if it was not running."""
    return _stop("mongo", timeout)


# ---- commands -----------------------------------------------------------------------------------


def ensure_up(settings: Settings | None = None) -> None:
    """Fetch/build, start and wait for Kafka and FerretDB (unless external), then ensure the topics."""
    settings = settings or load_settings()
    if settings.kafka.external:
        if not _kafka_answers(settings.kafka.bootstrap_servers):
            raise InfraError(f"external Kafka {settings.kafka.bootstrap_servers} does not answer")
        say(f"kafka: external broker {settings.kafka.bootstrap_servers} answers")
    else:
        start_kafka(settings)
    if settings.mongo.external:
        reason = _mongo_check(settings)
        if reason:
            raise InfraError(f"external MongoDB does not answer an authenticated ping: {reason}")
        say("mongo: external server answers")
    else:
        settings = ensure_credentials(settings)
        start_mongo(settings)
    try:
        from shared.kafka_utils import ensure_topics

        created = ensure_topics(settings.kafka)
    except Exception as err:
        raise InfraError(f"could not ensure the Kafka topics: {err!r}") from err
    say(f"topics: created {', '.join(created)}" if created else "topics: all present")
    _summary(settings)


def _summary(settings: Settings) -> None:
    rows = [
        ("kafka", settings.kafka.bootstrap_servers, settings.kafka.external),
        ("mongo", "{}:{}".format(*mongo_address(settings.mongo.uri)), settings.mongo.external),
    ]
    say("")
    for name, address, external in rows:
        if external:
            say(f"{name:6} {address}  (external, not managed here)")
            continue
        pid = running_pid(name)
        say(f"{name:6} {address}  pid {pid or '-'}  log {log_file(name)}  data {DATA_DIRS[name]}")
    if not settings.mongo.external:
        say(f"credentials: {LOCAL_ENV_FILE} (user {settings.mongo.username})")


def down(settings: Settings | None = None) -> list[str]:
    """Stop the servers started by ``up``; return the names of those that were stopped."""
    settings = settings or load_settings()
    stopped = []
    for name, external, stop in (
        ("kafka", settings.kafka.external, stop_kafka),
        ("mongo", settings.mongo.external, stop_mongo),
    ):
        if external:
            say(f"{name}: external, left alone")
            continue
        pid = stop()
        say(f"{name}: stopped pid {pid}" if pid else f"{name}: not running")
        if pid:
            stopped.append(name)
    return stopped


def status(settings: Settings | None = None) -> bool:
    """Print the state of both servers; True when both answer."""
    settings = settings or load_settings()
    checks = {
        "kafka": (settings.kafka.bootstrap_servers, _kafka_answers(settings.kafka.bootstrap_servers)),
        "mongo": ("{}:{}".format(*mongo_address(settings.mongo.uri)), _mongo_check(settings) is None),
    }
    external = {"kafka": settings.kafka.external, "mongo": settings.mongo.external}
    for name, (address, answers) in checks.items():
        pid = None if external[name] else running_pid(name)
        state = "external" if external[name] else "running" if pid else "stopped"
        say(f"{name:6} {state:8} pid {pid or '-':<8} {address:22} answering: {'yes' if answers else 'no'}")
    return all(answers for _, answers in checks.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.infra", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            ensure_up()
        elif args.command == "down":
            down()
        else:
            return 0 if status() else 3
    except (InfraError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
