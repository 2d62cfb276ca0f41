#!/bin/sh
# Reach the external backends the way the stack will, before it is (re)started: a one-off
# container of the MLflow service (its image, environment and CA mounts; secrets from .env
# through compose, never in argv) runs check_backends.py, which names what failed (DNS,
# connect, TLS, authentication, missing database or bucket). On success the checksums of the
# inputs it used are stamped in .backends-checked, so an unchanged host is not checked again.
# Usage: check-backends.sh --stack-dir DIR --project NAME [--database yes] [--s3 BUCKET]
set -eu
dir= project= checks=
while [ $# -ge 2 ]; do
    case $1 in
        --stack-dir) dir=$2 ;;
        --project) project=$2 ;;
        --database) [ "$2" = yes ] && checks="$checks --database" ;;
        --s3) checks="$checks --s3 $2" ;;
        *) break ;;
    esac
    shift 2
done
if [ $# -ne 0 ] || [ -z "$dir" ] || [ -z "$project" ]; then
    echo "usage: check-backends.sh --stack-dir DIR --project NAME [--database yes] [--s3 BUCKET]" >&2
    exit 2
fi
cd "$dir"
# $checks unquoted on purpose: option words (a bucket name has no spaces: S3 naming rules).
docker compose --project-name "$project" run --rm --no-deps -T mlflow python - $checks < "$dir/check_backends.py"
umask 077
sha256sum .env compose.yaml mlflow.env > .backends-checked
