#!/bin/sh
# Entrypoint of the standin/minio image (written for this project): like the
# official image's, `docker run IMAGE server /data ...` runs `minio server /data ...`.
set -e
if [ "$#" -gt 0 ] && [ "$1" != "minio" ] && ! command -v "$1" > /dev/null 2>&1; then
	set -- minio "$@"
fi
exec "$@"
