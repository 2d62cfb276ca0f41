#!/bin/sh
# Reach the external backends the way the stack will, before it is (re)started: a one-off
# container of the MLflow service (its image, environment and CA mounts; secrets from .env
# through compose, never in argv) runs check_backends.py, which names what failed (DNS,
# connect, TLS, authentication, missing database or bucket). On success the checksums of the
# inputs it used are stamped in .backends-checked, so an unchanged host is not checked again.
# Usage: check-backends.sh STACK_DIR PROJECT [--database] [--s3 BUCKET]
set -eu
dir=$1 project=$2
shift 2
cd "$dir"
docker compose --project-name "$project" run --rm --no-deps -T mlflow python - "$@" < "$dir/check_backends.py"
umask 077
sha256sum .env compose.yaml mlflow.env > .backends-checked
