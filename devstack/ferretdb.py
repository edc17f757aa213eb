"""The local MongoDB-protocol server: FerretDB v1.24.2 on SQLite, built from source, authentication on.

`go mod download` fetches the source; it is patched (see below) and built into .local/ferretdb/bin.
Its data stays in .local/ferretdb/data; the generated credentials in .local/infra.env.
"""

from __future__ import annotations

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
    run_logged(cmd, LOG_DIR / "build-ferretdb.log", "go build", "packages compiled", counted, cwd=src)
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
            _build_ferretdb()
        FERRET_DATA.mkdir(parents=True, exist_ok=True)
        FERRET_STATE.mkdir(parents=True, exist_ok=True)
        argv = ferretdb_argv(FERRET_BIN, port, FERRET_DATA, FERRET_STATE, settings.mongo.username or "")
        password = settings.mongo.password.get_secret_value() if settings.mongo.password else ""
        return spawn("mongo", argv, env={**os.environ, "FERRETDB_SETUP_PASSWORD": password})

    return start("mongo", (port,), answers, prepare, timeout)


def stop_mongo(timeout: float = 20.0) -> int | None:
    """Stop the FerretDB we started (by its PID file); return its PID, or None if it was not running."""
    return stop("mongo", timeout)
