"""CLI:  python -m tools.harness build|start|stop|status|ssh  (run as root)."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

from . import targets
from .cache import prune
from .rootfs import build_rootfs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.harness")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or verify cached) rootfs / VM image")
    b.add_argument("--kind", choices=["container", "vm"], action="append")
    s = sub.add_parser("start", help="start a target that keeps running until `stop`")
    s.add_argument("--kind", choices=["container", "vm"], required=True)
    s.add_argument("--name")
    s.add_argument("--index", type=int)
    st = sub.add_parser("stop", help="stop a target and remove everything it created")
    st.add_argument("--name", required=True)
    sub.add_parser("status", help="list targets known from /run/mlflow-stack-tests")
    sh = sub.add_parser("ssh", help="run a command (or a shell) on a target")
    sh.add_argument("--name", required=True)
    sh.add_argument("--user", default="root")
    sh.add_argument("command", nargs=argparse.REMAINDER)
    pr = sub.add_parser("prune", help="delete cached images not used for --days (no targets may run)")
    pr.add_argument("--days", type=float, default=7)
    a = p.parse_args(argv)

    if a.cmd == "build":
        for kind in a.kind or ["container", "vm"]:
            t0 = time.monotonic()
            path = build_rootfs(kind) if kind == "container" else targets.build_vm_image()
            print(f"{kind}: {path} ({time.monotonic() - t0:.1f}s)")
    elif a.cmd == "start":
        if a.kind == "container":
            t = targets.start_container_target(index=a.index or 1, name=a.name, keep=True)
        else:
            t = targets.start_vm_target(index=a.index or 200, name=a.name, keep=True)
        print(f"name:    {t.name}")
        print(f"address: {t.address}")
        print(f"ssh:     {shlex.join(t.ssh_command())}")
        print(f"stop:    python -m tools.harness stop --name {t.name}")
    elif a.cmd == "stop":
        state = targets.load_state(a.name)
        if state is None:
            print(f"no target named {a.name}", file=sys.stderr)
            return 0  # idempotent: nothing left to stop
        targets.cleanup_state(state)
        print(f"stopped {a.name}")
    elif a.cmd == "status":
        for st_ in targets.all_states():
            alive = bool(st_.get("pid")) and targets._proc_start_time(st_["pid"]) == st_.get("pid_start")
            print(f"{st_['name']:12} {st_['kind']:9} {st_['address']:15} pid={st_.get('pid')} "
                  f"{'running' if alive else 'DEAD (run stop to clean up)'}")
    elif a.cmd == "prune":
        running = [s_["name"] for s_ in targets.all_states()]
        if running:
            # VM disks are overlays on a cached base image; never pull it from under them.
            print(f"targets still running: {', '.join(running)}; stop them first", file=sys.stderr)
            return 1
        for path in prune(a.days):
            print(f"removed {path}")
    elif a.cmd == "ssh":
        t = targets.get_target(a.name)
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        return subprocess.call(t.ssh_command(a.user) + ([shlex.join(cmd)] if len(cmd) > 1 else cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
