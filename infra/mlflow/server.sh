#!/usr/bin/env bash
# MLflow tracking server for the project. Defaults: sqlite store at the repo root, artifacts in
# ./mlartifacts, bound to 127.0.0.1:5000, no login. Override with environment variables:
#   MLFLOW_BACKEND_URI    e.g. postgresql://mlflow:<password>@db-host:5432/mlflow  (pip install psycopg2-binary)
#   MLFLOW_ARTIFACTS      e.g. s3://my-bucket/mlflow   (AWS credentials in the environment; pip install boto3)
#   MLFLOW_HOST           0.0.0.0 only behind a firewall or an authenticating proxy
#   MLFLOW_PORT
#   MLFLOW_WORKERS        server processes (default 4)
#   MLFLOW_ALLOWED_HOSTS  Host headers the server accepts besides loopback, comma separated, * as wildcard,
#                         e.g. 'mlflow:*,mlflow.ml.svc.cluster.local:*,10.*'  (MLflow >= 3.5 rejects a Host that is
#                         not localhost or a private IP, so Ray workers calling http://mlflow:5000 need it; once
#                         set, private IPs are accepted only when listed)
#   MLFLOW_AUTH=basic     username/password login (MLflow's basic-auth app; the admin password is set in
#                         basic_auth.ini, see MLFLOW_AUTH_CONFIG_PATH). Off by default, for 127.0.0.1.
# Clients then set MLFLOW_TRACKING_URI=http://<host>:<port> (and MLFLOW_TRACKING_USERNAME/PASSWORD with auth).
set -euo pipefail
cd "$(dirname "$0")/../.."
args=(--backend-store-uri "${MLFLOW_BACKEND_URI:-sqlite:///$PWD/mlflow.db}"
      --artifacts-destination "${MLFLOW_ARTIFACTS:-$PWD/mlartifacts}"
      --host "${MLFLOW_HOST:-127.0.0.1}"
      --port "${MLFLOW_PORT:-5000}"
      --workers "${MLFLOW_WORKERS:-4}")
# --allowed-hosts replaces MLflow's default list, so loopback is added back for local clients
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS,localhost,localhost:*,127.0.0.1,127.0.0.1:*"); fi
case "${MLFLOW_AUTH:-none}" in
  basic) args+=(--app-name basic-auth) ;;
  none) ;;
  *) echo "error: MLFLOW_AUTH must be basic or none, got '$MLFLOW_AUTH'" >&2; exit 2 ;;
esac
exec mlflow server "${args[@]}"
