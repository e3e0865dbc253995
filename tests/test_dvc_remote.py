"""Results a team can pull: a run's DVC outputs go to the DVC remote ``storage`` on the storage URI
and its experiment to the git server (``stages/push.py``, the committed ``.dvc/config``); a second
clone gets both back with ``dvc pull`` and ``dvc exp pull origin NAME``. Through the real ``dvc`` and
``git`` CLIs, on the moto S3 server and on a plain folder. And publish_results copies models/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import storage

from .conftest import ROOT, s3_keys

BIN = Path(sys.executable).parent
EXP = "tiny-exp"

# One cheap stage: its output depends on a param, so the experiment's bytes differ from the baseline's.
DVC_YAML = """\
stages:
  make:
    cmd: python make_out.py
    deps: [make_out.py]
    params: [scale]
    outs: [out]
    metrics:
      - metrics.json:
          cache: false
"""
MAKE_OUT = """\
import json, pathlib, yaml
scale = yaml.safe_load(open("params.yaml"))["scale"]
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
(out / "model.bin").write_bytes(bytes(range(256)) * scale)
(out / "note.txt").write_text(f"scale {scale}\\n")
json.dump({"size": 256 * scale}, open("metrics.json", "w"))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("GIT_REMOTE_URL", storage.ENV):
        env.pop(key, None)
    return {**env, **extra}


def sh(cmd: list[str], cwd: Path, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=120)
    if ok and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def push(cwd: Path, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-m", "stages.push", *args], cwd, ok=ok, **env)


def outputs(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted((repo / "out").rglob("*")) if p.is_file()}


def find_exp(tree, name: str) -> dict | None:
    """The experiment ``name`` anywhere in ``dvc exp show --json``."""
    if isinstance(tree, dict):
        if tree.get("name") == name and "data" in tree:
            return tree
        tree = list(tree.values())
    if isinstance(tree, list):
        return next((hit for item in tree if (hit := find_exp(item, name)) is not None), None)
    return None


def make_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A git + DVC repo with the project's .dvc/config (the default remote `storage`, placeholder URL)
    and one cheap stage, its bare `origin` holding `main`."""
    origin, repo = tmp_path / "origin.git", tmp_path / "cluster"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    repo.mkdir()
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["git", "config", "user.name", "ray"], repo)
    sh(["git", "config", "user.email", "ray@localhost"], repo)
    sh(["dvc", "init", "-q"], repo)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "make_out.py").write_text(MAKE_OUT)
    (repo / "params.yaml").write_text("scale: 2\n")
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "tiny study"], repo)
    sh(["git", "remote", "add", "origin", str(origin)], repo)
    return repo, origin


def push_url(uri: str) -> str:
    """Where stages.push puts the DVC remote for the storage URI ``uri``."""
    return f"{uri}/dvc" if storage.is_uri(uri) else str(Path(uri).resolve() / "dvc")


def round_trip(tmp_path: Path, uri: str, requests) -> None:
    """``requests()``: what the remote has seen so far (the S3 server's log; the folder's files)."""
    repo, origin = make_repo(tmp_path)
    # unconfigured (a fresh clone): repro works and contacts no remote; a push says what to set
    sh(["dvc", "repro"], repo)
    assert not requests(), "dvc repro contacted the remote"
    baseline = outputs(repo)
    out = push(repo, ok=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
        f"error: the DVC remote 'storage' has no URL: set {storage.ENV}"
    ), out.stderr
    # the lead: commit the reproduced baseline, push its outputs (remote URL from the storage URI) and the commit
    sh(["git", "add", "dvc.lock", ".gitignore", "metrics.json"], repo)
    sh(["git", "commit", "-qm", "baseline results"], repo)
    push(repo, **{storage.ENV: uri})
    sh(["git", "push", "-q", "origin", "main"], repo)
    local = sh(["dvc", "config", "--local", "remote.storage.url"], repo).stdout.strip()
    assert local == push_url(uri)
    assert not sh(["git", "status", "--porcelain"], repo).stdout.strip()  # .dvc/config unchanged, config.local ignored

    # the cluster job (infra/k8s/rayjob.yaml): check, run the experiment, push it
    bad = push(repo, "--check", ok=False, GIT_REMOTE_URL=str(tmp_path / "no-such-repo.git"), **{storage.ENV: uri})
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: `git ls-remote"), bad.stderr
    assert push(repo, "--check", **{storage.ENV: uri}).stdout.startswith(f"ok: data to {push_url(uri)}")
    seen = requests()
    sh(["dvc", "exp", "run", "--name", EXP, "-S", "scale=3"], repo)
    assert requests() == seen, "dvc exp run contacted the remote"
    produced = outputs(repo)
    assert produced != baseline and len(produced["out/model.bin"]) == 768
    # in the pod the git server is a URL (GIT_REMOTE_URL), not a remote of the image's /app
    pushed = push(repo, "--exp", EXP, GIT_REMOTE_URL=str(origin), **{storage.ENV: uri})
    assert f"dvc exp pull origin {EXP}" in pushed.stdout
    assert sh(["dvc", "exp", "list", "--name-only", "origin"], repo).stdout.split() == [EXP]

    # a laptop: a fresh clone from the git server, the remote's URL set once by hand
    laptop = tmp_path / "laptop"
    sh(["git", "clone", "-q", str(origin), str(laptop)], tmp_path)
    sh(["dvc", "remote", "modify", "--local", "storage", "url", push_url(uri)], laptop)
    sh(["dvc", "pull"], laptop)
    assert outputs(laptop) == baseline
    sh(["dvc", "exp", "pull", "origin", EXP], laptop)
    shown = find_exp(json.loads(sh(["dvc", "exp", "show", "--json"], laptop).stdout), EXP)
    assert shown is not None, "the experiment is not in dvc exp show"
    data = shown["data"]
    assert data["params"]["params.yaml"]["data"]["scale"] == 3
    assert data["metrics"]["metrics.json"]["data"]["size"] == 768
    shutil.rmtree(laptop / "out")
    sh(["dvc", "exp", "apply", EXP], laptop)  # from the cache `dvc exp pull` filled: nothing is rerun
    assert outputs(laptop) == produced
    # or from the environment, as the pod does: the same URL
    configured = push(laptop, "--configure", **{storage.ENV: uri}).stdout.strip()
    assert configured == f"dvc remote 'storage': {push_url(uri)}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_cluster_experiment_round_trips_through_s3_and_the_git_server(s3, tmp_path):
    def requests() -> list[str]:  # the fixture made the bucket (PUT /study); anything under the prefix is ours
        return [line for line in s3["log"].read_text().splitlines() if " /study/run" in line]

    round_trip(tmp_path, s3["uri"], requests)
    stored = s3_keys(f"{s3['uri']}/dvc")
    assert stored and all(k.startswith("study/run/dvc/files/md5/") for k in stored)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_cluster_experiment_round_trips_through_a_plain_folder(tmp_path):
    shared = tmp_path / "shared"

    def requests() -> list[Path]:
        return [p for p in shared.rglob("*") if p.is_file()] if shared.exists() else []

    round_trip(tmp_path, str(shared), requests)
    assert any((shared / "dvc" / "files" / "md5").rglob("*.dir"))


def test_publish_results_copies_models_by_default_and_a_missing_one_is_one_line(tmp_path):
    study, dest = tmp_path / "study", tmp_path / "bucket"
    files = {"metrics/claims.json": b'{"claims": []}', "plots/a.png": b"png", "reports/runs.json": b"{}",
             "models/backbone_simsiam.pt": bytes(range(256)) * 4, "dvc.lock": b"schema: '2.0'\n"}  # fmt: skip
    for rel, data in files.items():
        (study / rel).parent.mkdir(parents=True, exist_ok=True)
        (study / rel).write_bytes(data)
    out = sh([sys.executable, "-m", "stages.publish_results", "--to", str(dest)], study)
    root = Path(out.stdout.strip().split(" to ")[-1])
    assert root.parent == dest and out.stdout.startswith(f"published {len(files)} files")
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()} == {
        **files,
        storage.COMPLETE: b"\n".join(k.encode() for k in ["metrics/claims.json", "plots/a.png", "reports/runs.json",
                                                           "models/backbone_simsiam.pt", "dvc.lock"]) + b"\n",
    }  # fmt: skip
    shutil.rmtree(study / "models")
    shutil.rmtree(dest)
    out = sh([sys.executable, "-m", "stages.publish_results", "--to", str(dest)], study, ok=False)
    assert out.returncode == 2 and out.stderr.strip() == "error: nothing to publish at models (run the study first)"
    assert not dest.exists()
