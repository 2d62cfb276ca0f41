"""Reach the external database and S3 with the stack's own settings, from the host, and say
which step failed. Run by check-backends.sh in a one-off MLflow container (stdin: this file).

    python - [--database] [--s3 BUCKET]

Reads MLFLOW_BACKEND_STORE_URI, MLFLOW_S3_ENDPOINT_URL, AWS_* and MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE
from the environment. Never prints a password. Exit 0: every backend asked answered.
"""

import os
import socket
import sys
from urllib.parse import urlsplit

failures = []


def reach(what, host, port):
    """DNS then TCP; returns False (and records why) when either fails."""
    try:
        socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        failures.append(f"{what}: DNS: the host cannot resolve {host!r} ({error.strerror})")
        return False
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as error:
        failures.append(f"{what}: connect: {host}:{port} does not accept connections from the host "
                        f"({error.strerror or error}); is it running and is the port open to this server?")
        return False
    return True


def check_database():
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(os.environ["MLFLOW_BACKEND_STORE_URI"])
    what = f"external PostgreSQL {url.host}:{url.port or 5432}"
    if not reach(what, url.host, url.port or 5432):
        return
    try:
        with create_engine(url, connect_args={"connect_timeout": 10}).connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:  # psycopg2's message names the cause, never the password
        message = str(getattr(error, "orig", error)).strip().splitlines()[0]
        lowered = message.lower()
        if "password authentication failed" in lowered or "no pg_hba.conf entry" in lowered:
            kind = "authentication"
        elif "ssl" in lowered or "certificate" in lowered:
            kind = "TLS"
        elif "does not exist" in lowered:
            kind = "missing database or role"
        else:
            kind = "connection"
        failures.append(f"{what}: {kind}: {message} (user {url.username!r}, database {url.database!r}; "
                        "check postgres_user, postgres_password, postgres_db, postgres_sslmode)")
        return
    print(f"{what}: database {url.database!r} reached as {url.username!r}")


def check_s3(bucket):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, EndpointConnectionError, SSLError

    endpoint = os.environ["MLFLOW_S3_ENDPOINT_URL"]
    parts = urlsplit(endpoint)
    what = f"external S3 {endpoint}"
    if not reach(what, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)):
        return
    style = os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "path")
    client = boto3.client("s3", endpoint_url=endpoint,
                          config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1},
                                        connect_timeout=10, read_timeout=20))
    try:
        client.head_bucket(Bucket=bucket)
    except SSLError as error:
        failures.append(f"{what}: TLS: {error} (s3_ca_file names the CA that signed its certificate)")
        return
    except EndpointConnectionError as error:
        failures.append(f"{what}: connect: {error}")
        return
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            failures.append(f"{what}: missing bucket: {bucket!r} does not exist; create it (the deploy creates "
                            "buckets only in the bundled MinIO) or set minio_bucket")
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            failures.append(f"{what}: authentication: access to bucket {bucket!r} refused ({code}); check "
                            "s3_access_key, s3_secret_access_key and the key's rights on the bucket")
        else:
            failures.append(f"{what}: bucket {bucket!r}: {code or error}")
        return
    print(f"{what}: bucket {bucket!r} reached")


arguments = sys.argv[1:]
if "--database" in arguments:
    check_database()
if "--s3" in arguments:
    check_s3(arguments[arguments.index("--s3") + 1])
if failures:
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("Stopped before (re)starting the stack; nothing else was changed.", file=sys.stderr)
    sys.exit(1)
