#!/usr/bin/env bash
# MLflow tracking server for the project; how a team runs it on Kubernetes: infra/mlflow/README.md.
# Defaults, for one person: sqlite store at the repo root, artifacts in ./mlartifacts, bound to
# 127.0.0.1:5000, no login. Override with environment variables:
#   MLFLOW_BACKEND_URI    e.g. postgresql+psycopg2://mlflow@postgres:5432/mlflow, the password in PGPASSWORD (libpq
#                         reads it, so it is in neither the URI nor `ps`); psycopg2-binary is in the `cluster` extra.
#                         Name the driver: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not installed.
#   MLFLOW_ARTIFACTS      where the server keeps artifacts: a path (the shared volume) or s3://bucket/prefix (boto3
#                         and AWS credentials on the server only). Clients upload and download through the server
#                         (--serve-artifacts, URIs mlflow-artifacts:/...): they need neither the volume nor credentials.
#   MLFLOW_HOST           0.0.0.0 only behind a firewall, with MLFLOW_AUTH=basic
#   MLFLOW_PORT
#   MLFLOW_WORKERS        uvicorn worker processes: default 4 on PostgreSQL, 1 on sqlite. PostgreSQL takes concurrent
#                         writes from many connections (row locks, MVCC; each worker has its own pool). sqlite locks
#                         the whole file for each write, so extra workers only queue on it or fail with "database is
#                         locked", and on NFS/EFS its file locks are not reliable at all: sqlite is for one person.
#   MLFLOW_DB_WAIT_S      seconds to wait for a PostgreSQL/MySQL store to answer at start (default 60)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  default false here: MLflow 3's job runner (GenAI scorers, prompt
#                         optimisation, trace archival; this project uses none) is 8 more Python processes
#   MLFLOW_ALLOWED_HOSTS  Host headers the server accepts besides loopback, comma separated, * as wildcard,
#                         e.g. 'mlflow:*,mlflow.ml.svc.cluster.local:*,10.*'  (MLflow >= 3.5 rejects a Host that is
#                         not localhost or a private IP, so Ray workers calling http://mlflow:5000 need it; once
#                         set, private IPs are accepted only when listed)
#   MLFLOW_AUTH=basic     username/password login (MLflow's basic-auth app). This script writes the app's
#                         basic_auth.ini into a fresh private temporary folder and points MLFLOW_AUTH_CONFIG_PATH at it:
#     MLFLOW_AUTH_DATABASE_URI  the user/permission store (ini `database_uri`), e.g. a database of its own beside
#                               the runs: postgresql+psycopg2://mlflow@postgres:5432/mlflow_auth (PGPASSWORD again).
#                               Default with a sqlite store: basic_auth.db beside it. Never relative, so never in the
#                               working folder.
#     MLFLOW_AUTH_ADMIN_USERNAME  (default admin) and MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters): the admin created
#                               on the first start against an empty user store; MLflow reads both from the environment
#                               (they override the ini), so the password is never written to a file. Ignored once
#                               the admin exists: change it then with the update-password API.
#     MLFLOW_AUTH_DEFAULT_PERMISSION  what every user may do on what they did not create (default READ)
#     MLFLOW_AUTH_CACHE_TTL_S   seconds a worker trusts a password it verified (ini auth_cache_ttl_seconds; default 0,
#                               off). A check costs two scrypt hashes, 0.2 s of CPU or more per request; with the cache
#                               a changed password or a deleted user still works that long on the workers that cached it.
#     MLFLOW_FLASK_SERVER_SECRET_KEY  the CSRF key shared by the workers (default: a random one per start)
# Clients then set MLFLOW_TRACKING_URI=http://<host>:<port> (and MLFLOW_TRACKING_USERNAME/PASSWORD with auth).
set -euo pipefail
cd "$(dirname "$0")/../.."
die() { echo "error: $*" >&2; exit 2; }

backend=${MLFLOW_BACKEND_URI:-sqlite:///$PWD/mlflow.db}
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
case "$backend" in
  sqlite:*) workers=${MLFLOW_WORKERS:-1} ;;
  *) workers=${MLFLOW_WORKERS:-4} ;;
esac
for var in PGPASSWORD MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
  case "${!var:-}" in REPLACE_WITH_*) die "$var is still the placeholder '${!var}': set it in the Secret" ;; esac
done

args=(--backend-store-uri "$backend"
      --serve-artifacts
      --artifacts-destination "${MLFLOW_ARTIFACTS:-$PWD/mlartifacts}"
      --host "${MLFLOW_HOST:-127.0.0.1}"
      --port "${MLFLOW_PORT:-5000}"
      --workers "$workers")
# --allowed-hosts replaces MLflow's default list, so loopback is added back for local clients
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS,localhost,localhost:*,127.0.0.1,127.0.0.1:*"); fi

case "${MLFLOW_AUTH:-none}" in
  basic)
    auth_db=${MLFLOW_AUTH_DATABASE_URI:-}
    if [ -z "$auth_db" ]; then
      case "$backend" in
        sqlite:///*) auth_db="sqlite:///$(dirname "${backend#sqlite:///}")/basic_auth.db" ;;
        *) die "MLFLOW_AUTH=basic needs MLFLOW_AUTH_DATABASE_URI (e.g. postgresql+psycopg2://mlflow@postgres:5432/mlflow_auth)" ;;
      esac
    fi
    case "$auth_db" in
      sqlite:////*) ;;
      sqlite:*) die "MLFLOW_AUTH_DATABASE_URI must be an absolute sqlite path (sqlite:////abs/basic_auth.db), got '$auth_db'" ;;
    esac
    conf_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")   # mode 700
    export MLFLOW_AUTH_CONFIG_PATH="$conf_dir/basic_auth.ini"
    # the keys of mlflow/server/auth/basic_auth.ini; configparser interpolates %, so it is doubled
    cat >"$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${auth_db//%/%%}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_S:-0}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
      MLFLOW_FLASK_SERVER_SECRET_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
      export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    args+=(--app-name basic-auth) ;;
  none) ;;
  *) die "MLFLOW_AUTH must be basic or none, got '$MLFLOW_AUTH'" ;;
esac

# A database server may still be starting (a pod beside this one): wait for the stores, and say
# plainly when a driver or a database is missing, before MLflow creates or checks its tables.
dbs=()
for uri in "$backend" "${auth_db:-}"; do
  case "$uri" in sqlite:* | "") ;; *) dbs+=("$uri") ;; esac
done
if [ ${#dbs[@]} -gt 0 ]; then
  python - "${MLFLOW_DB_WAIT_S:-60}" "${dbs[@]}" <<'EOF'
import sys
import time

import sqlalchemy

HINTS = {"psycopg": "write postgresql+psycopg2:// (SQLAlchemy 2.1 reads postgresql:// as psycopg 3)",
         "psycopg2": "pip install psycopg2-binary (the cluster extra)"}  # fmt: skip
wait = float(sys.argv[1])
deadline = time.monotonic() + wait
for uri in sys.argv[2:]:
    shown = sqlalchemy.engine.make_url(uri).render_as_string(hide_password=True)
    while True:
        try:
            sqlalchemy.create_engine(uri).connect().close()
            break
        except ModuleNotFoundError as exc:
            print(f"error: {shown} needs the Python module {exc.name}: {HINTS.get(exc.name, 'install it')}", file=sys.stderr)
            sys.exit(2)
        except sqlalchemy.exc.OperationalError as exc:
            if time.monotonic() > deadline:
                print(f"error: the database {shown} did not answer within {wait:g} s: {exc.orig}", file=sys.stderr)
                sys.exit(2)
            time.sleep(1)
EOF
fi
exec mlflow server "${args[@]}"
