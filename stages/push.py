"""``python -m stages.push``: send a run where the team can pull it: its DVC outputs (models, data,
metrics: what ``dvc.lock`` names) to the DVC remote ``storage`` and, with ``--exp``, the experiment's
git refs to the team's git server.

    python -m stages.push --check               # before a long run: remote URL set, git remote reachable
    python -m stages.push --exp NAME            # dvc push, then dvc exp push GIT_REMOTE NAME
    python -m stages.push                       # dvc push only (after `dvc repro` and a commit)
    python -m stages.push --configure           # only set the remote's URL from PIPELINE_STORAGE_URI

The remote ``storage`` is the default remote of ``.dvc/config`` with a URL to fill in (its bucket is BUCKET). With
``PIPELINE_STORAGE_URI`` set, its URL becomes ``$PIPELINE_STORAGE_URI/dvc`` (a folder: the absolute
path) in the git-ignored ``.dvc/config.local``, so the data sit beside the run's shards and checkpoints;
without it, the URL is whatever ``dvc remote modify --local storage url ...`` set. S3 takes
``AWS_ENDPOINT_URL`` and the AWS credentials from the environment (dvc-s3, through botocore).

The git remote is ``$GIT_REMOTE_URL`` when set (a URL, e.g. in a pod whose /app was copied into the
image), else ``origin``. A laptop gets the results with ``dvc pull`` and ``dvc exp pull origin NAME``.
A failed step is one line (after DVC's or git's own message) and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pipeline import storage
from pipeline.errors import UserError, run_cli

REMOTE = "storage"
UNSET_URL = "s3://BUCKET/ssl-i2i/dvc"  # the URL .dvc/config ships with, before a team sets its own
GIT_ENV = "GIT_REMOTE_URL"


def dvc_bin() -> str:
    """The ``dvc`` beside this interpreter (the project's virtualenv), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else "dvc"


def run(cmd: list[str], capture: bool = False, timeout: float | None = None) -> str:
    """Run ``cmd``; its output goes to ours (or is returned with ``capture``); a failure is a UserError."""
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(cmd)}` took over {timeout:.0f} s") from None
    if out.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed (exit {out.returncode})")
    return out.stdout or ""


def remote_url(uri: str) -> str:
    """The DVC remote's URL for the storage URI ``uri``: ``<uri>/dvc`` (a folder: its absolute path)."""
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if storage.is_uri(uri):
        return f"{uri.rstrip('/')}/dvc"
    return str(Path(uri).resolve() / "dvc")


def configure() -> str:
    """Set the remote's URL from ``PIPELINE_STORAGE_URI`` when that is set; return the URL in effect."""
    dvc = dvc_bin()
    uri = storage.storage_uri()
    if uri is not None:
        run([dvc, "remote", "modify", "--local", REMOTE, "url", remote_url(uri)])
    url = run([dvc, "config", f"remote.{REMOTE}.url"], capture=True).strip()
    if not url or url == UNSET_URL:
        raise UserError(
            f"the DVC remote '{REMOTE}' has no URL: set {storage.ENV} (the remote is <uri>/dvc) or run "
            f"`dvc remote modify --local {REMOTE} url s3://<bucket>/ssl-i2i/dvc`"
        )
    return url


def git_remote() -> str:
    return os.environ.get(GIT_ENV, "").strip() or "origin"


def check() -> tuple[str, str]:
    """Fail fast, before a run: the DVC remote has a URL and the git remote answers."""
    url = configure()
    remote = git_remote()
    if remote == "origin" and not run(["git", "remote"], capture=True).split().count("origin"):
        raise UserError(
            f"no git remote 'origin': set {GIT_ENV} to the team's git server, or `git remote add origin URL`"
        )
    run(["git", "ls-remote", "-q", remote], capture=True, timeout=120)
    return url, remote


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check that the push can work, push nothing")
    mode.add_argument("--configure", action="store_true", help=f"only set the remote's URL from ${storage.ENV}")
    ap.add_argument("--exp", action="append", default=[], help="an experiment to push to the git remote (repeatable)")
    args = ap.parse_args()
    if args.configure:
        print(f"dvc remote '{REMOTE}': {configure()}")
        return
    if args.check:
        url, remote = check()
        print(f"ok: data to {url}, experiments to {remote}")
        return
    url = configure()
    dvc = dvc_bin()
    run([dvc, "push", "-r", REMOTE])
    if args.exp:
        remote = git_remote()
        run([dvc, "exp", "push", "-r", REMOTE, remote, *args.exp])
        print(f"pushed the outputs to {url} and {', '.join(args.exp)} to {remote}")
        print(f"pull them with: dvc pull && dvc exp pull origin {' '.join(args.exp)}")
    else:
        print(f"pushed the outputs to {url}")


if __name__ == "__main__":
    run_cli(main)
