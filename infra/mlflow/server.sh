#!/usr/bin/env bash
# MLflow tracking server for the project. Defaults: sqlite store at the repo root, artifacts in
# ./mlartifacts, bound to 127.0.0.1:5000. Override with environment variables:
#   MLFLOW_BACKEND_URI   e.g. postgresql://mlflow:<password>@db-host:5432/mlflow  (pip install psycopg2-binary)
#   MLFLOW_ARTIFACTS     e.g. s3://my-bucket/mlflow   (AWS credentials in the environment; pip install boto3)
#   MLFLOW_HOST          0.0.0.0 only behind a firewall or an authenticating proxy
#   MLFLOW_PORT
# Clients then set MLFLOW_TRACKING_URI=http://<host>:<port>.
set -euo pipefail
exec mlflow server \
  --backend-store-uri "${MLFLOW_BACKEND_URI:-sqlite:///mlflow.db}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:-./mlartifacts}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}"
