"""`make test` from an empty cache: start its first builds while `make setup` installs the test
venv's packages (uv: seconds; pip, its fallback: about 1.5 min).

The targets' debootstrap (the VM's: a copy of it with the kernel added, as soon as it is done)
and the stand-in images need the standard
library only (and the venv's pip for one wheel), so they can start as soon as the venv exists.
Each is cached by its inputs under a lock (tools/harness/cache.py, tools/standins/build.py): a
test that needs one waits for this build, or builds it again itself if this one failed.

Run by `make test` in the background (`python -m tools.prewarm`), its output in prewarm.log
beside the lanes' logs.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback


def _builds():
    # Imported here: a failure to import is reported in the log like a failed build.
    from tools.harness.rootfs import debootstrap
    from tools.standins.build import ensure_standin_archive

    return {
        "debootstrap for the container targets": lambda: debootstrap("container"),
        "debootstrap for the VM": lambda: debootstrap("vm"),
        "stand-in images": ensure_standin_archive,
    }


def main() -> int:
    started = time.monotonic()
    failed: list[str] = []

    def run(name, build) -> None:
        try:
            build()
            print(f"[prewarm] {name}: ready after {time.monotonic() - started:.0f} s", flush=True)
        except Exception:
            failed.append(name)
            print(f"[prewarm] {name} failed (the tests build it again):\n{traceback.format_exc()}", flush=True)

    try:
        builds = _builds()
    except Exception:
        print(f"[prewarm] nothing started:\n{traceback.format_exc()}", flush=True)
        return 1
    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in builds.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
