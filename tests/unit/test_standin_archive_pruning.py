"""A build of new stand-in images prunes old archives, but never one a running session still
deploys from (seen: a concurrent session's build deleted the archive a VM test needed for its
rerun)."""

from __future__ import annotations

import os
import time

from tools.standins import build


def archive(tmp_path, name: str, age_hours: float):
    path = tmp_path / f"{build.ARCHIVE_PREFIX}{name}.tar"
    path.write_bytes(b"tar")
    old = time.time() - age_hours * 3600
    os.utime(path, (old, old))
    return path


def test_archives_used_within_the_keep_time_survive_a_prune(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "cache_dir", lambda: tmp_path)
    new = archive(tmp_path, "new", 0)
    in_use = archive(tmp_path, "in-use", 13)
    build._mark_in_use(in_use)  # what ensure_standin_archive does for the session using it
    recent = archive(tmp_path, "recent", 1)
    stale = archive(tmp_path, "stale", 13)
    build._prune_old_archives(keep=new)
    assert new.exists() and in_use.exists() and recent.exists()
    assert not stale.exists()


def test_ensure_marks_an_existing_archive_in_use(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "cache_dir", lambda: tmp_path)
    path = build.archive_path()
    path.write_bytes(b"tar")
    old = time.time() - 20 * 3600
    os.utime(path, (old, old))
    assert build.ensure_standin_archive() == path
    assert time.time() - path.stat().st_mtime < 60
