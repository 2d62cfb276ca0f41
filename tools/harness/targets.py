"""Disposable Debian 13 servers to deploy to: systemd-nspawn containers and qemu (TCG) VMs.

Every resource a target creates (process, veth/tap, iptables rule, directory) is recorded in a
state file under /run/mlflow-stack-tests/<name>.json *before* it is created, so `stop()` -- from
this process, another process, or a later run after a crash -- can remove exactly those.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import rootfs as rootfs_mod
from .cache import cache_root, discard_tree
from .rootfs import log

STATE_DIR = Path("/run/mlflow-stack-tests")
VM_MEM_MB = 4096
# Two vCPUs: with one (tried in the CI rehearsal of 8d4c152) qemu took less of the machine's CPU
# but the VM test took ~4 min longer (reboot to healthy 367 s against 270), and the VM lane with
# it. Without the reboot, tried again alone on an idle machine (2026-12-07): one vCPU took more
# of both, first run 394.9 s against 244.8 and qemu 442 CPU-s against 340 (docs/dev/measured.md).
VM_SMP = 2
# See tools/harness/README.md, "VM guest double fault". The guest kernel must not execute
# cmpxchg16b (faulted under multi-threaded TCG on this host's QEMU 7.2), but user space must
# keep CX16: it is part of x86-64-v2, and NumPy 2 (MLflow) refuses to import without it
# ("NumPy was built with baseline optimizations (X86_V2)"), which `-cpu max,-cx16` did.
# `clearcpuid=cx16` hides it from the kernel only: SLUB and this_cpu_cmpxchg128 take their
# software paths; the CPUID instruction still reports it to programs; both vCPUs stay parallel.
VM_CPU = "max"
VM_KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 net.ifnames=0 clearcpuid=cx16"
# Fixed MACs: a VM resumed from the snapshot still has the host side's MAC in its ARP cache.
HOST_TAP_MAC = "02:99:00:00:00:01"
GUEST_MAC = "52:54:00:99:00:02"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,10}$")  # "tap-" + name must fit IFNAMSIZ (15)
# Guest kernel console lines that mean the VM is dead or no longer trustworthy. With Debian's
# default kernel.panic=0 a panicked guest just spins: qemu stays alive, SSH never answers.
DEATH_RE = re.compile(r"Kernel panic|double fault|\bBUG: |\bOops\b|general protection fault"
                      r"|Fatal exception")
WATCH_INTERVAL = 3.0
CONSOLE_TAIL = 40


# The image's cold boot under TCG: a guest kernel crashed once early in boot (an `int3` Oops in
# sched_clock_cpu while the kernel patched its own code on two vCPUs, CI rehearsal of 2026-12-07),
# before anything of ours ran. A crash there is the emulator's, so the build boots a fresh disk
# once more; a crash after the snapshot still fails the test that sees it.
COLD_BOOT_ATTEMPTS = 2


class TargetDied(RuntimeError):
    """The target's process is gone or its kernel crashed; the message has the console tail."""


# ---------------------------------------------------------------- small host helpers

def _run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def default_route_iface() -> str:
    out = _run(["ip", "-4", "route", "show", "default"]).stdout.split()
    if "dev" not in out:
        raise RuntimeError("host has no IPv4 default route")
    return out[out.index("dev") + 1]


def _link_exists(dev: str) -> bool:
    return _run(["ip", "link", "show", "dev", dev], check=False).returncode == 0


def _address_in_use(addr: str) -> bool:
    out = _run(["ip", "-4", "-o", "addr", "show"]).stdout
    return f" {addr}/" in out


def _proc_start_time(pid: int) -> str | None:
    """Start time from /proc/<pid>/stat: guards against killing a recycled PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _pid_gone(pid: int) -> bool:
    try:  # reap it if it is our own child, else it lingers as a zombie
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return _proc_start_time(pid) is None


def _kill_and_wait(pid: int, start_time: str | None, timeout: float) -> None:
    if not pid or _proc_start_time(pid) is None or (start_time and _proc_start_time(pid) != start_time):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid_gone(pid):
            return
        time.sleep(0.1)
    log(f"pid {pid} ignored SIGTERM for {timeout:.0f}s, sending SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while not _pid_gone(pid):
        time.sleep(0.1)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies, even by SIGKILL
    (a test run killed from outside must not leave a pyinfra run working on a target)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _killpg(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _kill_container(pid: int, start_time: str | None, timeout: float = 10) -> None:
    """Stop a disposable nspawn container at once: SIGKILL its init, then nspawn exits.

    A graceful poweroff (SIGTERM to nspawn -> SIGRTMIN+3 to the container's systemd) waits for
    every unit to stop; with dockerd inside that took the full 90 s default timeout (dockerd,
    containerd-shims and live-restore containers). Nothing in a throwaway rootfs needs a clean
    shutdown, so we kill the container's init (nspawn's child, PID 1 of the container's PID
    namespace): the kernel then kills every process in that namespace, and nspawn, seeing its
    child gone, tears down the veth and its mounts and exits by itself.
    """
    if not pid or _proc_start_time(pid) is None or (start_time and _proc_start_time(pid) != start_time):
        return
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid_gone(pid):
            return
        time.sleep(0.05)
    log(f"systemd-nspawn {pid} still running {timeout:.0f}s after its init was killed; SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while not _pid_gone(pid):
        time.sleep(0.05)


# ---------------------------------------------------------------- state files

def _state_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def _save_state(state: dict) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = _state_path(state["name"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.rename(tmp, path)


def load_state(name: str) -> dict | None:
    try:
        return json.loads(_state_path(name).read_text())
    except FileNotFoundError:
        return None


def all_states() -> list[dict]:
    if not STATE_DIR.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(STATE_DIR.glob("*.json"))]


def _iptables(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return _run(["iptables", "-w", *args], check=check)


def _add_rule(state: dict, table: str, chain: str, spec: list[str], insert: bool = False) -> None:
    state["rules"].append([table, chain, spec])
    _save_state(state)
    _iptables(["-t", table, "-I" if insert else "-A", chain, *spec])


def cleanup_state(state: dict) -> None:
    """Undo everything recorded in `state`; safe to call repeatedly and on partial states."""
    name = state["name"]
    errors = []
    steps: list[tuple[str, float]] = []
    t0 = time.monotonic()

    def step(what: str) -> None:
        steps.append((what, time.monotonic() - t0 - sum(d for _, d in steps)))
    try:
        if state["kind"] == "container":
            _kill_container(state.get("pid") or 0, state.get("pid_start"))
        else:  # qemu exits at once on SIGTERM
            _kill_and_wait(state.get("pid") or 0, state.get("pid_start"), 10)
    except Exception as e:  # keep cleaning the rest
        errors.append(f"kill: {e}")
    step("kill")
    for dev in state.get("links", []):
        if _link_exists(dev):
            r = _run(["ip", "link", "del", "dev", dev], check=False)
            if r.returncode and _link_exists(dev):
                errors.append(f"ip link del {dev}: {r.stderr.strip()}")
    for table, chain, spec in reversed(state.get("rules", [])):
        # Delete exactly the rules we added (same spec), each once, only if still present.
        if _iptables(["-t", table, "-C", chain, *spec], check=False).returncode == 0:
            r = _iptables(["-t", table, "-D", chain, *spec], check=False)
            if r.returncode:
                errors.append(f"iptables -D {chain}: {r.stderr.strip()}")
    step("links+rules")
    errors += _remove_cgroups(state.get("cgroups", []))
    step("cgroups")
    for p in state.get("paths", []):
        try:
            discard_tree(Path(p))
        except Exception as e:
            errors.append(str(e))
    step("files")
    if time.monotonic() - t0 > 5:
        log(f"slow cleanup of {name}: " + ", ".join(f"{w} {d:.1f}s" for w, d in steps))
    if errors:
        raise RuntimeError(f"cleanup of target {name} incomplete: {'; '.join(errors)}")
    _state_path(name).unlink(missing_ok=True)


# ---------------------------------------------------------------- automatic cleanup

_live: dict[str, "Target"] = {}
_live_lock = threading.Lock()
_atexit_registered = False
_handlers_installed = False


def _stop_all() -> None:
    with _live_lock:
        targets = list(_live.values())
    for t in targets:
        try:
            t.stop()
        except Exception as e:
            log(f"cleanup of {t.name} failed: {e}")


def _on_signal(signum, frame):
    _stop_all()
    prev = _prev_handlers.get(signum)
    if callable(prev):
        prev(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


_prev_handlers: dict[int, object] = {}


def _register(target: "Target") -> None:
    global _atexit_registered, _handlers_installed
    with _live_lock:
        _live[target.name] = target
        if not _atexit_registered:
            atexit.register(_stop_all)
            _atexit_registered = True
        # Only the main thread may set signal handlers: a first target started by a background
        # build (the loader of docker_data_with_images) must not leave the later ones without
        # them (a SIGTERM to `make test`'s VM lane left its VM running).
        if not _handlers_installed and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                _prev_handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, _on_signal)
            _handlers_installed = True


# ---------------------------------------------------------------- the target

@dataclass
class Target:
    name: str
    kind: str            # "container" or "vm"
    address: str         # IPv4 of the target; SSH on 22, published ports reachable here too
    ssh_key: Path        # private key valid for root and labadmin
    index: int = 0
    state: dict = field(default_factory=dict, repr=False)
    _console_offset: int = field(default=0, repr=False)
    _console_pending: str = field(default="", repr=False)
    _console_dead: str = field(default="", repr=False)

    def ssh_command(self, user: str = "root") -> list[str]:
        # ConnectTimeout also bounds the banner exchange: an emulated guest still booting, with
        # the host's cores busy, took over 5 s to send its banner (CI run of 2026-12-06).
        connect_timeout = 20 if self.kind == "vm" else 5
        return ["ssh", "-i", str(self.ssh_key), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=15", f"{user}@{self.address}"]

    def ssh(self, command: str, user: str = "root", check: bool = True,
            timeout: float = 600, watch: bool = True) -> subprocess.CompletedProcess:
        """Run `command` on the target; bounded by `timeout`, and (watch=True) aborted with
        TargetDied within WATCH_INTERVAL seconds if the target dies meanwhile. A connection
        that fails before the command starts is tried again while `timeout` allows."""
        cmd = self.ssh_command(user) + [command]
        deadline = time.monotonic() + timeout
        while True:
            left = max(1.0, deadline - time.monotonic())
            kw = dict(check=False, text=True, capture_output=True, timeout=left, stdin=subprocess.DEVNULL)
            result = subprocess.run(cmd, **kw) if not watch else self.run_watched(cmd, **kw)
            if not (_ssh_never_connected(result) and deadline - time.monotonic() > 2):
                break
            time.sleep(1)
        if check:
            result.check_returncode()
        return result

    # ------------------------------------------------------------ liveness watchdog

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        try:
            data = Path(self._console_log()).read_bytes()[-256 * 1024:]
        except OSError as e:
            return f"(no console log: {e})"
        text = data.decode(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def death_reason(self) -> str | None:
        """Why the target is dead (process gone, kernel panic/oops on the console), or None."""
        state = self.state
        pid = state.get("pid")
        if pid and (_proc_start_time(pid) is None
                    or (state.get("pid_start") and _proc_start_time(pid) != state["pid_start"])):
            return f"process {pid} ({'qemu' if self.kind == 'vm' else 'systemd-nspawn'}) is gone"
        if self.kind == "vm":  # a container's console is the host kernel's business
            try:
                with open(self._console_log(), "rb") as fh:
                    fh.seek(self._console_offset)
                    chunk = fh.read()
            except OSError:
                return None
            self._console_offset += len(chunk)
            # The last, unfinished line is kept and searched again with what follows it.
            text = self._console_pending + chunk.decode(errors="replace")
            m = DEATH_RE.search(text)
            self._console_pending = text[text.rfind("\n") + 1:][-4096:]
            if m:
                self._console_dead = m.group(0)
            if self._console_dead:
                return f"guest kernel crashed ({self._console_dead!r} on the serial console)"
        return None

    def assert_alive(self) -> None:
        """Raise TargetDied (with the last console lines) if the target is dead or panicked."""
        reason = self.death_reason()
        if reason:
            raise TargetDied(f"target {self.name}: {reason}; last {CONSOLE_TAIL} lines of "
                             f"{self._console_log()}:\n{self.console_tail()}")

    def run_watched(self, cmd: list[str], *, timeout: float, check: bool = False,
                    interval: float = WATCH_INTERVAL, **popen_kw) -> subprocess.CompletedProcess:
        """subprocess.run(cmd, timeout=...) that polls assert_alive() every `interval` seconds
        and kills cmd (its whole process group) as soon as the target is found dead."""
        self.assert_alive()
        capture = popen_kw.pop("capture_output", False)
        if capture:
            popen_kw["stdout"] = popen_kw["stderr"] = subprocess.PIPE
        popen_kw.setdefault("start_new_session", True)  # kill ssh children of e.g. pyinfra too
        popen_kw.setdefault("preexec_fn", die_with_parent)
        deadline = time.monotonic() + timeout
        with subprocess.Popen(cmd, **popen_kw) as proc:
            try:
                while True:
                    try:
                        out, err = proc.communicate(timeout=min(interval, max(0.05, deadline - time.monotonic())))
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    reason = self.death_reason()
                    if reason or time.monotonic() >= deadline:
                        _killpg(proc)
                        out, err = proc.communicate()
                        if reason:
                            self.assert_alive()  # raises with the console tail
                        raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err)
            except BaseException:
                _killpg(proc)
                raise
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if proc.returncode and self.death_reason():
            self.assert_alive()  # failed because the target died: say so
        if check:
            result.check_returncode()
        return result

    def inventory_data(self, user: str = "root") -> dict:
        data = {
            "ssh_user": user,
            "ssh_key": str(self.ssh_key),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "no",
        }
        if user != "root":
            data["_sudo"] = True
        if self.kind == "vm":  # an emulated guest under load can miss a connect timeout
            data["ssh_connect_retries"] = 3
        return data

    def stop(self) -> None:
        state = load_state(self.name) or self.state
        if state:
            cleanup_state(state)
        with _live_lock:
            _live.pop(self.name, None)

    def wait_ssh(self, timeout: float = 120, users: tuple[str, ...] = ("root", rootfs_mod.SUDO_USER)) -> None:
        deadline = time.monotonic() + timeout
        for user in users:
            while True:
                try:
                    if self.ssh("true", user=user, check=False, timeout=30).returncode == 0:
                        break
                except subprocess.TimeoutExpired:
                    pass
                self.assert_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"target {self.name}: no SSH as {user} on {self.address} "
                                       f"after {timeout:.0f}s; last console lines:\n{self.console_tail()}")
                time.sleep(0.5)

    def _console_log(self) -> str:
        return str(Path(self.state.get("dir", "/nonexistent")) / "console.log")

    def _boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=30).stdout.strip()

    def sync_clock(self) -> None:
        self.ssh(f"date -u -s @{time.time():.3f} >/dev/null", timeout=60)

    def reboot(self, timeout: float = 600) -> None:
        if self.kind == "container":
            return self._reboot_container(timeout)
        old = self._boot_id()
        self.ssh("systemctl reboot", check=False, timeout=30)
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
                if r.returncode == 0 and r.stdout.strip() and r.stdout.strip() != old:
                    break
            except subprocess.TimeoutExpired:
                pass
            self.assert_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"VM {self.name} did not come back within {timeout:.0f}s; "
                                   f"console:\n{self.console_tail()}")
            time.sleep(1)
        self.wait_ssh(timeout=max(30, deadline - time.monotonic()))
        self.wait_system_running(timeout=max(30, deadline - time.monotonic()))
        self.sync_clock()

    def _reboot_container(self, timeout: float) -> None:
        # systemd-nspawn exits when the container reboots (a service manager would restart
        # it); we do that by hand: same rootfs, new veth, same address and rules.
        state = load_state(self.name) or self.state
        # watch=False: nspawn exits on a container reboot, which is the point here.
        self.ssh("systemctl reboot", check=False, timeout=30, watch=False)
        deadline = time.monotonic() + timeout
        while not _pid_gone(state["pid"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {self.name} did not shut down for the reboot")
            time.sleep(0.2)
        tdir = Path(state["dir"])
        _spawn_nspawn(state, self.name, tdir / "rootfs", tdir)
        self.state = state
        veth = f"ve-{self.name}"
        while not _link_exists(veth):
            if _proc_start_time(state["pid"]) is None or time.monotonic() > deadline:
                raise RuntimeError(f"nspawn for {self.name} did not come back; see {tdir}/console.log")
            time.sleep(0.1)
        _run(["ip", "addr", "add", f"10.99.{self.index}.1/30", "dev", veth])
        _run(["ip", "link", "set", veth, "up"])
        self.wait_ssh(timeout=max(30, deadline - time.monotonic()))
        self.wait_system_running(timeout=max(30, deadline - time.monotonic()))

    def wait_system_running(self, timeout: float = 300) -> str:
        # "degraded" also counts: the boot finished, some unrelated unit failed.
        r = self.ssh("systemctl is-system-running --wait", check=False, timeout=timeout)
        status = r.stdout.strip()
        if status not in ("running", "degraded"):
            raise RuntimeError(f"{self.name}: system state {status!r} {r.stderr.strip()}")
        return status

    @classmethod
    def from_state(cls, name: str) -> "Target":
        state = load_state(name)
        if state is None:
            raise LookupError(f"no target named {name!r} (no {_state_path(name)})")
        return cls(name=name, kind=state["kind"], address=state["address"],
                   ssh_key=Path(state["ssh_key"]), index=state["index"], state=state)


# ssh's own errors before a session exists: the remote command never ran, so trying again is safe.
_SSH_CONNECT_ERRORS = ("Connection timed out during banner exchange", "kex_exchange_identification",
                       "ssh: connect to host")


def _ssh_never_connected(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 255 and any(e in (result.stderr or "") for e in _SSH_CONNECT_ERRORS)


# ---------------------------------------------------------------- common start logic

class IndexInUseError(RuntimeError):
    """The 10.99.<index>.0/30 subnet is taken by another target or host interface."""


@contextlib.contextmanager
def _state_lock():
    # Makes "check index free + claim it" atomic across processes (pytest-xdist, demo, bench).
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _index_problem(index: int, name: str | None = None) -> str | None:
    for other in all_states():
        if other["index"] == index and other["name"] != name:
            return (f"index {index} (10.99.{index}.0/30) is in use by running target "
                    f"{other['name']!r}; stop it or choose another index")
    if _address_in_use(f"10.99.{index}.1"):
        return (f"10.99.{index}.1 is already configured on a host interface; "
                f"choose another index or remove it")
    return None


def free_index(first: int, last: int) -> int:
    """Lowest index in [first, last] not used by any target (a hint; start_* re-checks)."""
    for index in range(first, last + 1):
        if _index_problem(index) is None:
            return index
    raise IndexInUseError(f"no free index in {first}..{last}")


def _in_use(state: dict) -> bool:
    """Another process made this target and still runs (its target may still be starting)."""
    owner = state.get("owner")
    return bool(owner) and owner != os.getpid() and _proc_start_time(owner) == state.get("owner_start")


def _prepare(name: str, index: int, kind: str) -> dict:
    if not NAME_RE.match(name):
        raise ValueError(f"target name {name!r} must match {NAME_RE.pattern}")
    if not 1 <= index <= 254:
        raise ValueError(f"index {index} out of range 1..254")
    with _state_lock():
        old = load_state(name)
        if old and _in_use(old):
            # Two pytest processes (make test's lanes) that pick the same free index also pick the
            # same name: the second one used to remove the first one's target as "leftovers".
            raise IndexInUseError(f"target {name!r} is in use by a running process or target "
                                  f"(python -m tools.harness stop --name {name})")
        if old:
            log(f"removing leftovers of earlier target {name}")
            cleanup_state(old)
        problem = _index_problem(index, name)
        if problem:
            raise IndexInUseError(problem)
        state = {"name": name, "kind": kind, "index": index, "address": f"10.99.{index}.2",
                 "ssh_key": str(rootfs_mod.ssh_keypair()), "pid": None, "pid_start": None,
                 "owner": os.getpid(), "owner_start": _proc_start_time(os.getpid()),
                 "links": [], "rules": [], "paths": [], "created": time.time()}
        _save_state(state)
    return state


def _setup_routing(state: dict, dev: str, nat: bool = True) -> None:
    index = state["index"]
    _run(["ip", "addr", "add", f"10.99.{index}.1/30", "dev", dev])
    _run(["ip", "link", "set", dev, "up"])
    if not nat:
        return
    subnet = f"10.99.{index}.0/30"
    tag = ["-m", "comment", "--comment", f"mlflow-stack-tests:{state['name']}"]
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    _add_rule(state, "nat", "POSTROUTING",
              ["-s", subnet, "-o", default_route_iface(), *tag, "-j", "MASQUERADE"])
    # The host FORWARD policy may be DROP (dockerd on the host sets it), so accept explicitly.
    _add_rule(state, "filter", "FORWARD", ["-s", subnet, *tag, "-j", "ACCEPT"], insert=True)
    _add_rule(state, "filter", "FORWARD", ["-d", subnet, *tag, "-j", "ACCEPT"], insert=True)


def _finish(target: Target, keep: bool) -> Target:
    if not keep:
        _register(target)
    return target


# ---------------------------------------------------------------- container targets

def start_container_target(index: int = 1, name: str | None = None, *, keep: bool = False,
                           docker: bool = False, images: tuple[Path, ...] = ()) -> Target:
    """Boot a systemd-nspawn container at 10.99.<index>.2 and wait until SSH answers.

    keep=True: no atexit/signal cleanup in this process (the CLI uses it; stop via the name).
    docker=True: Debian's Docker already installed (rootfs.docker_packages()).
    images: `docker save` archives whose images that Docker has already (implies docker).
    """
    name = name or f"ct{index}"
    docker_data = docker_data_with_images(images) if images else None
    root_src = rootfs_mod.build_rootfs("container", docker=docker or bool(images))
    t0 = time.monotonic()
    state = _prepare(name, index, "container")
    target = Target(name=name, kind="container", address=state["address"],
                    ssh_key=Path(state["ssh_key"]), index=index, state=state)
    try:
        tdir = cache_root() / "targets" / name
        state["dir"] = str(tdir)
        state["paths"].append(str(tdir))
        veth = f"ve-{name}"
        state["links"].append(veth)
        _save_state(state)
        discard_tree(tdir)
        tdir.mkdir(parents=True)
        root = _mount_root(root_src, tdir)
        docker_dir = tdir / "docker"
        if docker_data:
            _put_docker_data(docker_data, docker_dir)
        else:  # the root filesystems have none: Docker is started only in a target
            docker_dir.mkdir(mode=0o710)
        (root / "etc/network/interfaces.d/host0").write_text(rootfs_mod.container_netconfig(index))
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        resolv.write_text(f"nameserver {rootfs_mod.host_nameserver()}\n")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        _spawn_nspawn(state, name, root, tdir)

        deadline = time.monotonic() + 30
        while not _link_exists(veth):
            if _proc_start_time(state["pid"]) is None or time.monotonic() > deadline:
                raise RuntimeError(f"nspawn for {name} did not create {veth}; see {tdir}/console.log")
            time.sleep(0.1)
        _setup_routing(state, veth)
        target.wait_ssh(timeout=120)
        log(f"container target {name} up at {target.address} in {time.monotonic() - t0:.1f}s")
    except BaseException:
        cleanup_state(state)
        raise
    return _finish(target, keep)


def _mount_root(root_src: Path, tdir: Path) -> Path:
    """The target's root filesystem: an overlay of the cached one (read-only, shared by every
    target) and a directory of its own for what it changes, mounted at <tdir>/rootfs.

    Why not a copy: 874 MB / 17,664 files per target, and on this host's ext4 (no journal) each
    new inode is looked for past the recently deleted ones, which every stopped target's
    background delete provides: a copy took 1-4 s idle but 13-20 s and as many
    CPU-seconds of kernel time during the suite (docs/dev/measured.md). Removed with the
    target's directory (discard_tree unmounts what is below it)."""
    for part in ("upper", "work", "rootfs"):
        (tdir / part).mkdir(exist_ok=True)  # the upper one may have files already
    root = tdir / "rootfs"
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={root_src},upperdir={tdir / 'upper'},workdir={tdir / 'work'}", str(root)])
    return root


CGROUP_PARENT = "mlflow-stack-tests"


def _tracking_cgroup_mounts() -> list[Path]:
    """Mount points of the hierarchies systemd tracks units in: cgroup2, and v1 name=systemd."""
    points = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            _dev, mp, fstype, opts = line.split()[:4]
            if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
                points.append(Path(mp.replace("\\040", " ")))
    return points


def _own_cgroups(state: dict, name: str) -> list[Path]:
    """Create (idempotently) and record this target's own cgroups, one per tracking hierarchy.

    Why: with --keep-unit on a host without systemd, nspawn splits *its own* cgroup into
    `supervisor` and `payload`, and the container's systemd sees `payload` as its cgroup root
    (cgroup namespace). Started from the host's root cgroup, every container got the same
    `/payload`: all containers' systemd instances managed the very same
    `/payload/user.slice/user-0.slice/user@0.service`, `/payload/system.slice/docker.service`,
    ... A container stopping root's user manager (10 s after the last SSH session, logind's
    UserStopDelaySec) then waited for processes of *other* containers in "its" cgroup (shown
    as pid 0: another PID namespace), until TimeoutStopSec (2 min) -- and an SSH login
    arriving meanwhile waited for that stop job. Same for docker.service at shutdown (90 s).
    A cgroup of its own per nspawn gives every container a private `payload` subtree.
    """
    paths = [mp / CGROUP_PARENT / name for mp in _tracking_cgroup_mounts()]
    cgroups = state.setdefault("cgroups", [])
    for path in paths:
        if str(path) not in cgroups:
            cgroups.append(str(path))
    _save_state(state)
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths


def _remove_cgroups(paths: list[str], timeout: float = 10) -> list[str]:
    """rmdir the target's cgroups bottom-up (cgroupfs dirs hold only virtual files); retried
    while the killed container's last processes are being reaped (EBUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        errors = _rmdir_cgroups_once(paths)
        if not errors or time.monotonic() > deadline:
            return errors
        time.sleep(0.2)


def _rmdir_cgroups_once(paths: list[str]) -> list[str]:
    errors = []
    for top in paths:
        if not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as e:
                errors.append(f"rmdir {dirpath}: {e}")
                break
    return errors


def _spawn_nspawn(state: dict, name: str, root: Path, tdir: Path) -> None:
    env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="yes")
    cmd = ["systemd-nspawn", "-b", "-D", str(root), "-M", name, "--network-veth",
           "--register=no", "--keep-unit", "--capability=all",
           "--system-call-filter=add_key keyctl bpf", "--console=pipe", "--resolv-conf=off",
           # Docker's data on a real filesystem, as on a server: its overlay2 driver does not
           # work on the overlayfs root (_mount_root).
           f"--bind={tdir / 'docker'}:/var/lib/docker"]
    cgroups = _own_cgroups(state, name)
    # Join the target's own cgroups, then exec nspawn (same pid), so its payload is private.
    enter = "".join(f'echo $$ > "{cg}/cgroup.procs" || exit 125; ' for cg in cgroups)
    with open(tdir / "console.log", "ab") as logf:
        # Own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
        proc = subprocess.Popen(["sh", "-c", enter + 'exec "$@"', "sh", *cmd], env=env,
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    state["pid"] = proc.pid
    state["pid_start"] = _proc_start_time(proc.pid)
    _save_state(state)


# Index range of the container that loads image archives for docker_data_with_images.
IMAGE_LOADER_RANGE = (70, 79)


def docker_data_with_images(archives: tuple[Path, ...]) -> Path:
    """Cached: Debian's Docker data directory (/var/lib/docker) with `archives` loaded, for
    targets that should have those images already (a server whose images were pulled or baked
    into its disk). Loaded by that same Docker, in a container target: a target's start then
    copies 1.2 GB of files instead of an SFTP upload and a `docker load` of 1.3 GB each (35 s of
    CPU per target here; minutes of emulated CPU in the VM)."""
    from .cache import build_cached

    base = rootfs_mod.build_rootfs("container", docker=True)
    inputs: list[str | bytes] = [base.name, *(f"{a.name}:{a.stat().st_size}" for a in archives)]

    def build(tmp: Path) -> None:
        t0 = time.monotonic()
        loader = None
        while loader is None:
            index = free_index(*IMAGE_LOADER_RANGE)
            try:
                loader = start_container_target(index=index, name=f"load{index}", docker=True)
            except IndexInUseError:
                pass  # another process claimed it between the check and the start
        try:
            tdir = Path(loader.state["dir"])
            root = tdir / "rootfs"
            for archive in archives:
                shutil.copyfile(archive, root / "root" / archive.name)
                loader.ssh(f"docker load --quiet --input /root/{archive.name} && rm /root/{archive.name}",
                           timeout=900)
            loader.ssh("systemctl stop docker.socket docker.service containerd.service && sync", timeout=120)
            subprocess.run(["cp", "-a", "--reflink=auto", str(tdir / "docker"), str(tmp)], check=True)
        finally:
            loader.stop()
        log(f"Docker data with {len(archives)} image archive(s) loaded in {time.monotonic() - t0:.0f}s")

    return build_cached("docker-data", inputs, build)


def _put_docker_data(docker_data: Path, target: Path) -> None:
    """Make `target` (the directory the target gets as /var/lib/docker) a loaded Docker data
    directory.

    The image layers (`overlay2/`, 1.2 GB of the suite's images) are hard links to the cache's
    files, not copies (ext4 has no reflinks): Docker never writes a layer's files once it has
    extracted them (a container writes to a layer of its own, overlayfs copies a file up before
    changing it, and removing an image unlinks). The rest, Docker's databases that it writes in
    place, is copied."""
    target.mkdir()
    shutil.copystat(docker_data, target)
    for entry in docker_data.iterdir():
        how = "--link" if entry.name == "overlay2" else "--reflink=auto"
        subprocess.run(["cp", "-a", how, str(entry), str(target / entry.name)], check=True)


# ---------------------------------------------------------------- VM targets

def _qemu_cmd(image_dir: Path, disk: Path, tap: str, tdir: Path, loadvm: bool) -> list[str]:
    # Must be identical (devices, memory, MAC) between the snapshot build and every resume.
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", VM_CPU, "-smp", str(VM_SMP),
           "-m", str(VM_MEM_MB),
           "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
           "-append", VM_KERNEL_ARGS,
           "-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe",
           "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
           "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
           "-display", "none", "-serial", f"file:{tdir / 'console.log'}",
           "-monitor", f"unix:{tdir / 'mon.sock'},server,nowait",
           "-daemonize", "-pidfile", str(tdir / "vm.pid")]
    if loadvm:
        cmd += ["-loadvm", "ready"]
    return cmd


def _launch_vm(state: dict, image_dir: Path, disk: Path, tdir: Path, loadvm: bool, nat: bool) -> None:
    tap = f"tap-{state['name']}"
    state["links"].append(tap)
    _save_state(state)
    _run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
    _run(["ip", "link", "set", tap, "address", HOST_TAP_MAC])
    _setup_routing(state, tap, nat=nat)
    r = _run(_qemu_cmd(image_dir, disk, tap, tdir, loadvm), check=False)
    if r.returncode:
        raise RuntimeError(f"qemu failed: {r.stderr.strip()}")
    pid = int((tdir / "vm.pid").read_text().strip())
    state["pid"] = pid
    state["pid_start"] = _proc_start_time(pid)
    _save_state(state)


def _hmp(sock_path: Path, commands: list[str], timeout: float = 600) -> str:
    """Run human-monitor commands, each waiting for the next prompt."""
    out = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))

        def until_prompt() -> str:
            buf = b""
            while not buf.endswith(b"(qemu) "):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return buf.decode(errors="replace")

        until_prompt()
        for c in commands:
            s.sendall(c.encode() + b"\n")
            # After "quit" qemu closes the socket; closing first could drop the command.
            out.append(until_prompt())
    return "".join(out)


def build_vm_image(index: int = 200, images: tuple[Path, ...] = ()) -> Path:
    """Cached dir with vmlinuz, initrd.img, base.qcow2 and ready.qcow2 (holds snapshot 'ready').
    images: `docker save` archives whose images the guest's Docker has already (loaded on
    this machine's CPU: docker_data_with_images)."""
    from .cache import build_cached

    rootfs = rootfs_mod.build_rootfs("vm", vm_index=index, docker=True)
    docker_data = docker_data_with_images(images) if images else None
    inputs: list[str | bytes] = [rootfs.name, str(index), str(VM_MEM_MB), str(VM_SMP),
                                 HOST_TAP_MAC, GUEST_MAC, " ".join(_qemu_cmd(Path("I"), Path("D"), "T", Path("L"), True))]
    if docker_data:
        inputs.append(docker_data.name)

    def build(tmp: Path) -> None:
        t0 = time.monotonic()
        tmp.mkdir()
        boot = rootfs / "boot"
        shutil.copy(sorted(boot.glob("vmlinuz-*"))[-1], tmp / "vmlinuz")
        shutil.copy(sorted(boot.glob("initrd.img-*"))[-1], tmp / "initrd.img")
        log("creating VM disk image")
        source = rootfs
        if docker_data:
            # The root filesystem and the Docker data in one view, without a copy: the overlay
            # root, and the data bind-mounted on it (in the overlay's upper layer, the image
            # layers' whiteouts would be taken for the overlay's own and hidden).
            (tmp / "upper/var/lib/docker").mkdir(parents=True)
            _put_docker_data(docker_data, tmp / "docker")
            source = _mount_root(rootfs, tmp)
            _run(["mount", "--bind", str(tmp / "docker"), str(source / "var/lib/docker")])
        try:
            _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(source), str(tmp / "base.raw"), "16G"])
        finally:
            if docker_data:
                _run(["umount", str(source / "var/lib/docker")])
                _run(["umount", str(source)])
                for part in ("rootfs", "upper", "work", "docker"):
                    shutil.rmtree(tmp / part)
        _run(["qemu-img", "convert", "-O", "qcow2", str(tmp / "base.raw"), str(tmp / "base.qcow2")])
        (tmp / "base.raw").unlink()
        for attempt in range(1, COLD_BOOT_ATTEMPTS + 1):
            # Relative backing path: stays valid when tmp is renamed into place.
            (tmp / "ready.qcow2").unlink(missing_ok=True)
            _run(["qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ready.qcow2"], cwd=tmp)
            name = f"vmb{index}"
            state = _prepare(name, index, "vm")
            state["dir"] = str(tmp)
            target = Target(name=name, kind="vm", address=state["address"],
                            ssh_key=Path(state["ssh_key"]), index=index, state=state)
            _register(target)  # a SIGTERM/Ctrl-C during the build still removes the tap and qemu
            try:
                log("cold-booting VM under TCG to take the snapshot (~1 min)")
                _launch_vm(state, tmp, tmp / "ready.qcow2", tmp, loadvm=False, nat=False)
                target.wait_ssh(timeout=600)
                target.wait_system_running(timeout=600)
                target.ssh("sync", timeout=60)
                log(f"VM booted after {time.monotonic() - t0:.0f}s; saving snapshot")
                _hmp(tmp / "mon.sock", ["stop", "savevm ready", "info snapshots", "quit"])
                deadline = time.monotonic() + 60
                while not _pid_gone(state["pid"]) and time.monotonic() < deadline:
                    time.sleep(0.2)
                break
            except TargetDied as died:
                if attempt == COLD_BOOT_ATTEMPTS:
                    raise
                log(f"the guest crashed while booting ({str(died).splitlines()[0]}); booting a fresh disk again")
            finally:
                target.stop()
        info = _run(["qemu-img", "snapshot", "-l", str(tmp / "ready.qcow2")]).stdout
        if "ready" not in info:
            raise RuntimeError(f"snapshot 'ready' missing from image: {info}")
        for f in ("console.log", "mon.sock", "vm.pid"):
            (tmp / f).unlink(missing_ok=True)
        log(f"VM image built in {time.monotonic() - t0:.0f}s")

    return build_cached("vm-image", inputs, build)


def start_vm_target(index: int = 200, name: str | None = None, *, keep: bool = False,
                    images: tuple[Path, ...] = ()) -> Target:
    """Resume a fresh qemu VM from the cached snapshot at 10.99.<index>.2; wait for SSH.

    The guest's static address is baked into the image, so each index has its own cached image.
    images: `docker save` archives whose images the guest's Docker has already.
    """
    name = name or f"vm{index}"
    image_dir = build_vm_image(index, images)
    t0 = time.monotonic()
    state = _prepare(name, index, "vm")
    target = Target(name=name, kind="vm", address=state["address"],
                    ssh_key=Path(state["ssh_key"]), index=index, state=state)
    try:
        tdir = cache_root() / "targets" / name
        state["dir"] = str(tdir)
        state["paths"].append(str(tdir))
        _save_state(state)
        discard_tree(tdir)
        tdir.mkdir(parents=True)
        disk = tdir / "disk.qcow2"
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(image_dir / "ready.qcow2"), str(disk)],
                       check=True)
        _run(["qemu-img", "rebase", "-u", "-b", str(image_dir / "base.qcow2"), "-F", "qcow2", str(disk)])
        _launch_vm(state, image_dir, disk, tdir, loadvm=True, nat=True)
        target.wait_ssh(timeout=120)
        # The guest resumes with the clock of snapshot time.
        target.sync_clock()
        log(f"VM target {name} up at {target.address} in {time.monotonic() - t0:.1f}s")
    except BaseException:
        cleanup_state(state)
        raise
    return _finish(target, keep)


def get_target(name: str) -> Target:
    """A Target handle for a running target started by any process (from its state file)."""
    return Target.from_state(name)
