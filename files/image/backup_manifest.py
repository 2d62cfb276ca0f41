"""Print a backup's manifest.json from its files, read as one tar stream on stdin (backup.sh
sends database.dump and artifacts.tar): each file's size and SHA-256, the objects and bytes
inside artifacts.tar, and what made the backup (this image's MLflow version, the schema
revision, host, bucket, prefix, times). Restore reads it (mlflow_stack/verbs/restore.py).

Run by backup.sh on the host in a one-off of the jobs service; the files are streamed, never
held whole in memory.

Usage: python backup_manifest.py --name NAME --schema-revision REV --host HOST --bucket BUCKET
                                 --prefix PREFIX --started EPOCH
"""

import argparse
import hashlib
import importlib.metadata
import json
import sys
import tarfile
import time

FORMAT = 1
CHUNK = 1024 * 1024


class HashingReader:
    """A file object that hashes and counts every byte read through it."""

    def __init__(self, stream):
        self.stream, self.sha256, self.bytes = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def describe(member_stream, name: str) -> dict:
    reader = HashingReader(member_stream)
    described = {"file": name}
    if name == "artifacts.tar":
        objects = object_bytes = 0
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            for member in archive:
                if member.isfile():
                    objects += 1
                    object_bytes += member.size
        described.update(objects=objects, object_bytes=object_bytes)
    reader.drain()  # what the tar reader left (its end blocks), or the whole dump
    described.update(bytes=reader.bytes, sha256=reader.sha256.hexdigest())
    return described


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for option in ("--name", "--schema-revision", "--host", "--bucket", "--prefix"):
        parser.add_argument(option, required=True)
    parser.add_argument("--started", type=int, required=True)
    args = parser.parse_args(argv)
    files = {}
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as stream:
        for member in stream:
            if member.isfile() and member.name in ("database.dump", "artifacts.tar"):
                files[member.name] = describe(stream.extractfile(member), member.name)
    missing = {"database.dump", "artifacts.tar"} - set(files)
    if missing:
        print(f"backup_manifest.py: {', '.join(sorted(missing))} not in the stream", file=sys.stderr)
        return 1
    manifest = {
        "format": FORMAT,
        "name": args.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": int(time.time()) - args.started,
        "mlflow_version": importlib.metadata.version("mlflow"),
        "schema_revision": args.schema_revision,
        "source": {"host": args.host, "bucket": args.bucket, "prefix": args.prefix},
        "database": files["database.dump"],
        "artifacts": files["artifacts.tar"],
    }
    print(json.dumps(manifest, indent=2))
    artifacts = files["artifacts.tar"]
    print(f"{artifacts['objects']} objects ({artifacts['object_bytes']} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
