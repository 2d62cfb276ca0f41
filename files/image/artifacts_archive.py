"""Export every object under the artifact prefix as a tar stream on stdout, or import one from
stdin into the bucket (replacing what is under the prefix). Objects are streamed, never held
whole in memory; progress goes to stderr.

Run by backup.sh / restore.sh on the host as a one-shot container of the MLflow image on the
compose network (the bucket init's service: its endpoint, bucket and credentials), so the
objects travel through the S3 API, not as a copy of MinIO's data directory. Tar member names
are keys relative to the prefix: a backup restores into any bucket and prefix.

Usage: python artifacts_archive.py export|import   (ARTIFACT_PREFIX in the environment)
"""

import os
import sys
import tarfile
import time

import boto3
from boto3.s3.transfer import TransferConfig

CHUNK = 8 * 1024 * 1024
PROGRESS_EVERY = 10.0  # seconds between progress lines
# Multipart parts held in memory at most: chunk size x concurrency.
TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024,
                          max_concurrency=4)


class Progress:
    def __init__(self, verb: str):
        self.verb, self.objects, self.bytes = verb, 0, 0
        self.started = self.last = time.monotonic()

    def add(self, size: int) -> None:
        self.bytes += size
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.line()

    def line(self, final: str = "") -> None:
        seconds = max(time.monotonic() - self.started, 1e-6)
        print(f"{self.verb} {self.objects} objects, {self.bytes / 1e6:.1f} MB in {seconds:.1f} s "
              f"({self.bytes / 1e6 / seconds:.1f} MB/s){final}", file=sys.stderr, flush=True)


class CountingReader:
    """A file object that reports every chunk read to the progress line."""

    def __init__(self, stream, progress: Progress):
        self.stream, self.progress = stream, progress

    def read(self, size: int = -1) -> bytes:
        # Fill the request: tarfile treats a short read as the end of the data.
        data = self.stream.read(size)
        while 0 < len(data) < size:
            more = self.stream.read(size - len(data))
            if not more:
                break
            data += more
        self.progress.add(len(data))
        return data


def objects_under(s3, bucket: str, prefix: str):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        yield from page.get("Contents", [])


def export(s3, bucket: str, prefix: str) -> None:
    progress = Progress("exported")
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", bufsize=CHUNK) as tar:
        for obj in objects_under(s3, bucket, prefix):
            info = tarfile.TarInfo(obj["Key"][len(prefix) + 1:])
            info.size, info.mode, info.mtime = obj["Size"], 0o600, obj["LastModified"].timestamp()
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            tar.addfile(info, CountingReader(body, progress))
            progress.objects += 1
    progress.line(final=f" from s3://{bucket}/{prefix}/")


def import_(s3, bucket: str, prefix: str) -> None:
    progress = Progress("imported")
    restored = set()
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|", bufsize=CHUNK) as tar:
        for member in tar:
            if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                raise SystemExit(f"refusing archive member {member.name!r}: not a plain relative object key")
            key = f"{prefix}/{member.name}"
            s3.upload_fileobj(CountingReader(tar.extractfile(member), progress), bucket, key, Config=TRANSFER)
            restored.add(key)
            progress.objects += 1
    # The prefix ends up holding exactly the backup's objects.
    stale = [obj["Key"] for obj in objects_under(s3, bucket, prefix) if obj["Key"] not in restored]
    for key in stale:  # one by one: not every S3 server has the batch delete
        s3.delete_object(Bucket=bucket, Key=key)
    progress.line(final=f" into s3://{bucket}/{prefix}/, {len(stale)} objects not in the backup removed")


def main() -> None:
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")
    bucket, prefix = os.environ["ARTIFACT_BUCKET"], os.environ["ARTIFACT_PREFIX"]
    {"export": export, "import": import_}[sys.argv[1]](s3, bucket, prefix)


if __name__ == "__main__":
    main()
