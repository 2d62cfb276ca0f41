#!/usr/bin/env python3
"""Record the tracking-database schema revision each locked MLflow release expects:
locks/schema-revisions.json ({"3.17.2": "dc11669786a5", ...}).

    python tools/schema_revisions.py        # every release with a lock in locks/

The deploy reads it while planning: it compares the database's revision with the configured
release's, to back up and migrate before an upgrade and to refuse a downgrade before anything
changes. The head revision is read from the release's own wheel (PyPI, no install): the one
migration in mlflow/store/db_migrations/versions/ that no other migration revises.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

LOCK_DIR = Path(__file__).resolve().parent.parent / "locks"
OUT = LOCK_DIR / "schema-revisions.json"
MIGRATION = re.compile(r"mlflow/store/db_migrations/versions/[^/]+\.py$")


def head_revision(wheel: Path) -> str:
    revisions, revised = set(), set()
    with zipfile.ZipFile(wheel) as archive:
        for name in filter(MIGRATION.match, archive.namelist()):
            text = archive.read(name).decode()
            revision = re.search(r"^revision\s*=\s*['\"]([0-9a-f]+)['\"]", text, re.M)
            down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.M)
            if revision:
                revisions.add(revision.group(1))
                revised.update(re.findall(r"['\"]([0-9a-f]+)['\"]", down.group(1)) if down else [])
    heads = revisions - revised
    if len(heads) != 1:
        raise SystemExit(f"{wheel.name}: expected one head revision, found {sorted(heads)}")
    return heads.pop()


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def main() -> None:
    versions = sorted((p.name[len("mlflow-"):-len(".txt")] for p in LOCK_DIR.glob("mlflow-*.txt")), key=version_key)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for version in versions:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            f"mlflow=={version}", "-d", f"{tmp}/{version}"], check=True)
            result[version] = head_revision(next(Path(tmp, version).glob("mlflow-*.whl")))
            print(f"{version}: {result[version]}")
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
