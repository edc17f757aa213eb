"""The local MongoDB-protocol server: FerretDB v1.24.2 on SQLite, built from source, authentication on.

`go mod download` fetches the source; it is patched (devstack/patches/ferretdb) and built into
.local/ferretdb/bin.
Its data stays in .local/ferretdb/data; the generated credentials in .local/infra.env.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from pydantic import SecretStr

from devstack.processes import (
    FERRET_BIN,
    FERRET_DIR,
    LOG_DIR,
    InfraError,
    is_running,
    require_tool,
    run_logged,
    say,
    spawn,
    start,
    stop,
)
from shared.config import LOCAL_DIR, LOCAL_ENV_FILE, Settings, load_settings, read_env_file

FERRETDB_VERSION = "v1.24.2"
FERRET_DATA = FERRET_DIR / "data"
FERRET_STATE = FERRET_DIR / "state"


def mongo_address(uri: str) -> tuple[str, int]:
    """Return host and port of the first host in a mongodb:// URI."""
    hosts = uri.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    host, _, port = hosts.split(",")[0].rpartition(":")
    return (host, int(port)) if host else (port, 27017)


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


def mongo_check(settings: Settings) -> str | None:
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


# Our fixes to FerretDB 1.24, as unified diffs applied in name order to the downloaded source, and
# the files they need added (copied in under the same relative paths). Each patch says what it
# fixes and which test pins it down.
PATCH_DIR = Path(__file__).parent / "patches" / "ferretdb"
FERRET_SRC = FERRET_DIR / "src"
FERRET_STAMP = FERRET_BIN.parent / "build.stamp"


def ferretdb_patches(patch_dir: Path = PATCH_DIR) -> list[Path]:
    """The patch files, in the order they apply."""
    return sorted(patch_dir.glob("*.patch"))


def ferretdb_new_files(patch_dir: Path = PATCH_DIR) -> list[Path]:
    """The files the patches add, relative to the source tree's root (and to ``patch_dir/files``)."""
    root = patch_dir / "files"
    return sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())


def ferretdb_build_stamp(patch_dir: Path = PATCH_DIR) -> str:
    """What the binary must have been built from: the version, and each patch and added file by content."""

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    patches = {path.name: digest(path) for path in ferretdb_patches(patch_dir)}
    files = {str(rel): digest(patch_dir / "files" / rel) for rel in ferretdb_new_files(patch_dir)}
    return json.dumps({"version": FERRETDB_VERSION, "patches": patches, "files": files}, indent=1)


def patch_ferretdb(src: Path, patch_dir: Path = PATCH_DIR) -> None:
    """Apply the patches to a FerretDB source tree and add their files; fail if the source is not what they expect."""
    # git is there on any clone (GNU patch is not on every Debian machine). `git apply` changes the
    # files of a patch only if every hunk applies with all its context lines, or nothing at all.
    git = require_tool("git", "install git to apply the FerretDB patches")
    for path in ferretdb_patches(patch_dir):
        done = subprocess.run([git, "apply", "-p1", str(path.resolve())], cwd=src, capture_output=True, text=True)
        if done.returncode != 0:
            raise InfraError(
                f"cannot apply {path.name} to {src} (FerretDB source changed?):\n{done.stdout}{done.stderr}".rstrip()
            )
    for relative in ferretdb_new_files(patch_dir):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(patch_dir / "files" / relative, src / relative)


def build_ferretdb(
    src: Path = FERRET_SRC, binary: Path = FERRET_BIN, log: Path = LOG_DIR / "build-ferretdb.log"
) -> None:
    """Download FerretDB's source into ``src``, patch it and build ``binary``, with its build stamp beside it."""
    go = require_tool("go", "install Go 1.24+ (https://go.dev/dl/) to build FerretDB")
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
    if src.exists():
        _make_writable(src)
        shutil.rmtree(src)
    shutil.copytree(json.loads(dl.stdout)["Dir"], src)  # the module cache copy is read-only
    _make_writable(src)
    (src / "build" / "version" / "version.txt").write_text(f"{FERRETDB_VERSION}\n")  # else panics at start
    patch_ferretdb(src)
    say("mongo: building FerretDB (1-4 minutes on a fresh machine) ...")
    cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-o", str(binary), "./cmd/ferretdb"]
    counted = lambda ln: not ln.startswith(("go: ", "#"))  # noqa: E731  (go build -v prints each package)
    run_logged(cmd, log, "go build", "packages compiled", counted, cwd=src)
    (binary.parent / FERRET_STAMP.name).write_text(ferretdb_build_stamp())


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
        reason = mongo_check(settings)
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
            build_ferretdb()
        FERRET_DATA.mkdir(parents=True, exist_ok=True)
        FERRET_STATE.mkdir(parents=True, exist_ok=True)
        argv = ferretdb_argv(FERRET_BIN, port, FERRET_DATA, FERRET_STATE, settings.mongo.username or "")
        password = settings.mongo.password.get_secret_value() if settings.mongo.password else ""
        return spawn("mongo", argv, env={**os.environ, "FERRETDB_SETUP_PASSWORD": password})

    return start("mongo", (port,), answers, prepare, timeout)


def stop_mongo(timeout: float = 20.0) -> int | None:
    """Stop the FerretDB we started (by its PID file); return its PID, or None if it was not running."""
    return stop("mongo", timeout)
