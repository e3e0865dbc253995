"""infra/mlflow/server.sh as a team runs it (infra/k8s/mlflow.yaml): on a real PostgreSQL (Debian's,
started here on 127.0.0.1 and stopped by process id), several workers taking two writers at once,
artifacts proxied by the server, and MLflow's basic auth with its user store in PostgreSQL."""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .cluster import free_port, stop_group
from .conftest import ROOT

SERVER = ROOT / "infra" / "mlflow" / "server.sh"
K8S = ROOT / "infra" / "k8s"
PG_PASSWORD = "pg-pass-for-the-test"
ADMIN_PASSWORD = "admin-pass-for-the-test"


def unavailable(why: str) -> None:
    """Skip on a developer's machine without it; in CI (CI set) a missing piece fails the test."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set, so this fails instead of skipping)")
    pytest.skip(why)


def pg_bin() -> Path:
    """Debian's PostgreSQL server binaries, the newest major version installed."""
    bins = [b for b in Path("/usr/lib/postgresql").glob("*/bin") if (b / "initdb").exists() and (b / "pg_ctl").exists()]
    if not bins:
        unavailable(
            "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl) missing: apt-get install -y postgresql"
        )
    return max(bins, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)


@dataclass
class Postgres:
    port: int

    def uri(self, db: str) -> str:
        """The URI server.sh gets: no password in it (libpq reads PGPASSWORD), as in mlflow.yaml."""
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user="mlflow", password=PG_PASSWORD, dbname=db)

    def query(self, db: str, sql: str, *args) -> list[tuple]:
        with contextlib.closing(self.connect(db)) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def create_db(self, name: str) -> None:
        with contextlib.closing(self.connect()) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" OWNER mlflow')


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL: data and unix socket in a fresh folder, TCP on 127.0.0.1 only, password
    (scram) login for user `mlflow`. PostgreSQL refuses to run as root: as root it runs as `postgres`."""
    binaries = pg_bin()
    try:
        import psycopg2  # noqa: F401  (the driver server.sh's MLflow needs: the `cluster` extra)
    except ModuleNotFoundError:
        unavailable("psycopg2 missing: pip install psycopg2-binary (the cluster extra)")
    # as root not under pytest's tmp_path: its folders are root's, 0700, which `postgres` cannot enter
    root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="mlflow-pg-", dir="/tmp" if root else None))
    as_owner: dict = {}
    if root:  # Popen's user=: no runuser/su in between, so the postmaster is this test's own child
        as_owner = {"user": "postgres", "group": "postgres", "extra_groups": []}
        shutil.chown(base, "postgres", "postgres")
    (base / "pw").write_text(PG_PASSWORD)
    if as_owner:
        shutil.chown(base / "pw", "postgres", "postgres")
    port = free_port()
    proc = None
    try:
        init = subprocess.run([str(binaries / "initdb"), "-D", str(base / "data"), "-U", "mlflow", f"--pwfile={base / 'pw'}",
                               "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                              cwd=base, capture_output=True, text=True, **as_owner)  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        proc = subprocess.Popen([str(binaries / "postgres"), "-D", str(base / "data"), "-h", "127.0.0.1", "-p", str(port),
                                 "-k", str(base), "-c", "fsync=off", "-c", "max_connections=200"],
                                cwd=base, stdout=(base / "log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                                **as_owner)  # fmt: skip
        pg = Postgres(port)
        deadline = time.monotonic() + 30
        while True:
            try:
                pg.connect().close()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((base / "log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield pg
    finally:
        if proc is not None:  # by its process group: SIGINT is PostgreSQL's fast shutdown, then whatever is left
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            stop_group(proc)
        shutil.rmtree(base, ignore_errors=True)


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    headers = {"Authorization": "Basic " + b64encode(":".join(auth).encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def mlflow_server(tmp_path: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """server.sh with ``env`` on a free port of 127.0.0.1, its temporary files (TMPDIR) in
    ``tmp_path``; yields its URL and log once /health answers; stopped by process group."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
    full.update(MLFLOW_PORT=str(port), MLFLOW_ARTIFACTS=str(tmp_path / "artifacts"), TMPDIR=str(tmp_path),
                PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env)  # fmt: skip
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [str(SERVER)], env=full, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a busy CI machine: each worker imports mlflow
        while True:
            with contextlib.suppress(OSError):
                if _get(f"{url}/health") == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"server.sh did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, log
    finally:
        stop_group(proc)


@dataclass
class Server:
    url: str
    log: Path
    tmp: Path  # its TMPDIR
    repo_auth_db_existed: bool


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory) -> Iterator[Server]:
    """server.sh as infra/k8s/mlflow.yaml runs it: runs in one PostgreSQL database, users and
    permissions in another, both without a password in the URI, login on, several workers."""
    if importlib.util.find_spec("flask_wtf") is None:  # MLflow's basic-auth app needs it: mlflow[auth]
        unavailable("Flask-WTF missing: pip install 'Flask-WTF<2' (the cluster extra)")
    postgres.create_db("mlflow")
    postgres.create_db("mlflow_auth")
    tmp = tmp_path_factory.mktemp("server")
    existed = (ROOT / "basic_auth.db").exists()
    env = dict(MLFLOW_BACKEND_URI=postgres.uri("mlflow"), PGPASSWORD=PG_PASSWORD, MLFLOW_AUTH="basic",
               MLFLOW_AUTH_DATABASE_URI=postgres.uri("mlflow_auth"), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
               MLFLOW_AUTH_DEFAULT_PERMISSION="EDIT", MLFLOW_AUTH_CACHE_TTL_S="60", MLFLOW_WORKERS="2")  # fmt: skip
    with mlflow_server(tmp, **env) as (url, log):
        yield Server(url, log, tmp, existed)


ADMIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}

# One of two processes logging at once: 5 runs with params, a metric history and an artifact. It
# says it is ready once mlflow is imported and waits for the go file: the server's URL and the experiment.
WRITER = """
import sys, time
from pathlib import Path
import mlflow

writer, go = sys.argv[1], Path(sys.argv[2])
Path(f"{go}.{writer}").touch()
while not go.exists():
    time.sleep(0.02)
url, exp_id = go.read_text().split()
client = mlflow.MlflowClient(tracking_uri=url)
for i in range(5):
    run_id = client.create_run(exp_id, run_name=f"{writer}-{i}").info.run_id
    client.log_param(run_id, "writer", writer)
    client.log_param(run_id, "i", i)
    for step in range(3):
        client.log_metric(run_id, "loss", 1.0 / (i + step + 1), step=step)
    client.log_text(run_id, f"{writer} {i}", "note.txt")
    client.set_terminated(run_id)
"""


@pytest.mark.slow
def test_two_writers_at_once_land_in_postgresql_through_several_workers(postgres, team_server, tmp_path, monkeypatch):
    import mlflow

    go = tmp_path / "go"
    env = {**os.environ, **ADMIN}
    writers = {w: subprocess.Popen([sys.executable, "-c", WRITER, w, str(go)], env=env, stderr=subprocess.PIPE, text=True)
               for w in ("a", "b")}  # fmt: skip
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        client = mlflow.MlflowClient(tracking_uri=team_server.url)
        exp_id = client.create_experiment("team")
        deadline = time.monotonic() + 120
        while not all(Path(f"{go}.{w}").exists() for w in writers):
            assert time.monotonic() < deadline and all(p.poll() is None for p in writers.values())
            time.sleep(0.05)
        (tmp_path / "go.tmp").write_text(f"{team_server.url} {exp_id}")
        (tmp_path / "go.tmp").rename(go)
        for w, p in writers.items():
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, (w, err[-3000:])
    finally:
        for p in writers.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    runs = client.search_runs([exp_id], max_results=100)
    assert sorted((r.data.params["writer"], int(r.data.params["i"])) for r in runs) == [
        (w, i) for w in ("a", "b") for i in range(5)
    ]
    for r in runs:
        i = int(r.data.params["i"])
        assert r.info.status == "FINISHED" and r.data.metrics["loss"] == pytest.approx(1.0 / (i + 3))
        assert [m.value for m in client.get_metric_history(r.info.run_id, "loss")] == pytest.approx(
            [1.0 / (i + s + 1) for s in range(3)]
        )
        # proxied: the client saw mlflow-artifacts:/, the file is where the server keeps artifacts
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")
        note = team_server.tmp / "artifacts" / exp_id / r.info.run_id / "artifacts" / "note.txt"
        assert note.read_text() == f"{r.data.params['writer']} {i}"
    spans = {w: [(r.info.start_time, r.info.end_time) for r in runs if r.data.params["writer"] == w] for w in writers}
    first, last = ({w: f(t for s in spans[w] for t in s) for w in writers} for f in (min, max))
    assert max(first.values()) < min(last.values()), spans  # the two writers' runs overlapped in time
    # in PostgreSQL, written through two worker processes (mlflow.yaml runs 4; 2 keep the test light)
    assert postgres.query("mlflow", "SELECT count(*) FROM runs WHERE experiment_id = %s", int(exp_id)) == [(10,)]
    log = team_server.log.read_text()
    assert len(re.findall(r"Started server process", log)) == 2, log[-3000:]


@pytest.mark.slow
def test_basic_auth_refuses_anonymous_requests_and_keeps_its_users_in_postgresql(postgres, team_server, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException

    url = team_server.url
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(search) == 401  # anonymous
    assert _get(search, ("admin", "not-the-password")) == 401
    assert _get(search, ("admin", ADMIN_PASSWORD)) == 200
    assert _get(f"{url}/health") == 200  # what the Kubernetes probes ask, without a login

    client = mlflow.MlflowClient(tracking_uri=url)
    for var in ADMIN:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MlflowException, match="401|[Uu]nauthori"):
        client.create_experiment("anonymous")
    for var, value in ADMIN.items():
        monkeypatch.setenv(var, value)
    exp_id = client.create_experiment("authed")
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "loss", 0.5)
    client.set_terminated(run_id)
    assert [r.data.metrics for r in client.search_runs([exp_id])] == [{"loss": 0.5}]
    assert postgres.query("mlflow", "SELECT count(*) FROM runs WHERE experiment_id = %s", int(exp_id)) == [(1,)]

    # a user the admin makes (the Ray pods' one): with EDIT by default it logs to the admin's
    # experiment, but deleting it takes MANAGE (its creator, the admin)
    new_user = urllib.request.Request(
        f"{url}/api/2.0/mlflow/users/create", data=b'{"username": "ray", "password": "ray-pass-for-the-test"}',
        headers={"Content-Type": "application/json", "Authorization": "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()},
    )  # fmt: skip
    urllib.request.urlopen(new_user, timeout=30).close()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ray")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "ray-pass-for-the-test")
    client.set_terminated(client.create_run(exp_id).info.run_id)
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403|[Pp]ermission"):
        client.delete_experiment(exp_id)
    assert len(client.search_runs([exp_id])) == 2

    # the ini server.sh wrote: where the user store is, and no password in it
    (ini,) = team_server.tmp.glob("mlflow-auth.*/basic_auth.ini")
    text = ini.read_text()
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    assert dict(cfg["mlflow"]) == {"default_permission": "EDIT", "database_uri": postgres.uri("mlflow_auth"),
                                   "admin_username": "admin", "auth_cache_ttl_seconds": "60",
                                   "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth"}  # fmt: skip
    assert ADMIN_PASSWORD not in text and PG_PASSWORD not in text
    assert postgres.query("mlflow_auth", "SELECT username, is_admin FROM users ORDER BY id") == [
        ("admin", True),
        ("ray", False),
    ]
    # not in a working folder: not at the repo root, where server.sh runs
    assert (ROOT / "basic_auth.db").exists() == team_server.repo_auth_db_existed


def _refusal(tmp_path: Path, **env: str) -> str:
    """server.sh's error for ``env``: it stops before starting anything."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
    full.update(TMPDIR=str(tmp_path), MLFLOW_PORT=str(free_port()), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                **env)  # fmt: skip
    done = subprocess.run([str(SERVER)], env=full, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    return done.stderr


def test_server_sh_refuses_placeholder_secrets_and_an_auth_store_in_the_working_folder(tmp_path):
    assert "PGPASSWORD is still the placeholder" in _refusal(tmp_path, PGPASSWORD="REPLACE_WITH_DB_PASSWORD")
    assert "MLFLOW_AUTH_ADMIN_PASSWORD is still the placeholder" in _refusal(
        tmp_path, MLFLOW_AUTH="basic", MLFLOW_AUTH_ADMIN_PASSWORD="REPLACE_WITH_ADMIN_PASSWORD"
    )
    assert "absolute sqlite path" in _refusal(
        tmp_path, MLFLOW_AUTH="basic", MLFLOW_AUTH_DATABASE_URI="sqlite:///basic_auth.db"
    )
    assert "needs MLFLOW_AUTH_DATABASE_URI" in _refusal(
        tmp_path, MLFLOW_AUTH="basic", MLFLOW_BACKEND_URI="postgresql+psycopg2://mlflow@db:5432/mlflow"
    )


def test_server_sh_waits_for_the_database_then_names_what_is_wrong(tmp_path):
    if importlib.util.find_spec("psycopg2") is None:
        unavailable("psycopg2 missing: pip install psycopg2-binary (the cluster extra)")
    down = f"postgresql+psycopg2://mlflow@127.0.0.1:{free_port()}/mlflow"  # nothing listens there
    assert "did not answer within 1 s" in _refusal(tmp_path, MLFLOW_BACKEND_URI=down, MLFLOW_DB_WAIT_S="1")
    auth_down = _refusal(tmp_path, MLFLOW_BACKEND_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", MLFLOW_AUTH="basic",
                         MLFLOW_AUTH_DATABASE_URI=down, MLFLOW_DB_WAIT_S="1")  # fmt: skip
    assert f"{down} did not answer" in auth_down  # the user store is waited for too
    if importlib.util.find_spec("psycopg") is None:  # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
        assert "write postgresql+psycopg2://" in _refusal(tmp_path, MLFLOW_BACKEND_URI=down.replace("+psycopg2", ""))


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_manifests_readme_and_image_agree_on_the_database_the_secret_and_the_driver():
    from sqlalchemy.engine import make_url

    mlflow_docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "mlflow.yaml").read_text())}
    pg_docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "postgres.yaml").read_text())}
    server = mlflow_docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = _env(server)
    db = pg_docs["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    db_env = _env(db)
    pg_service = pg_docs["Service"]
    init_sql = "".join(pg_docs["ConfigMap"]["data"].values())
    for key in ("MLFLOW_BACKEND_URI", "MLFLOW_AUTH_DATABASE_URI"):
        url = make_url(env[key])
        assert url.drivername == "postgresql+psycopg2" and url.password is None, (
            key
        )  # the password comes from PGPASSWORD
        assert (url.host, url.port, url.username) == (pg_service["metadata"]["name"], pg_service["spec"]["ports"][0]["port"],
                                                      db_env["POSTGRES_USER"])  # fmt: skip
        assert (
            url.database == db_env["POSTGRES_DB"] or f"CREATE DATABASE {url.database} OWNER {url.username};" in init_sql
        )
    assert make_url(env["MLFLOW_BACKEND_URI"]).database != make_url(env["MLFLOW_AUTH_DATABASE_URI"]).database
    assert pg_docs["StatefulSet"]["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]

    # one Secret, made by the documented command, holds every secret both pods read
    (secret,) = {s["secretRef"]["name"] for s in server["envFrom"]}
    pg_refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in db["env"]
        if "valueFrom" in e
    }
    assert pg_refs == {(secret, "PGPASSWORD")}
    for doc in (ROOT / "infra" / "mlflow" / "README.md", K8S / "mlflow.yaml"):
        command = re.search(rf"kubectl create secret generic {secret}((?:.|\\\n)*?)\n(?![#\s]*--)", doc.read_text())
        assert command, doc
        keys = set(re.findall(r"--from-literal=(\w+)=", command.group(1)))
        assert keys == {"PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}, (doc, keys)
    assert not any(k in env for k in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"))  # never in the manifest itself

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("psycopg2-binary") for d in pyproject["project"]["optional-dependencies"]["cluster"])
