"""What the stack costs, measured on a fresh container target (not a test: prints figures).

    make bench            # or: .venv/bin/python bench/bench.py [--skip-requests] [--skip-deploy] [--metrics]

Prints, from one run on one target:
- requests: `log_metric` latency (p50/p95, one client) and 16 concurrent clients (2 processes x
  8 threads, log_metric/log_batch mix) for the default deploy (basic-auth + TLS proxy) and, in
  the same run on the same target, a plain `mlflow server --app-name basic-auth` with MLflow's
  own defaults (same image, same PostgreSQL and bucket, plain HTTP), and the ratios;
  memory of each MLflow container (behind the proxy: mlflow-api, the tracking API under gunicorn,
  and mlflow, the rest under uvicorn);
- the deploy: first-run wall time, no-change rerun (median of 5) and its remote commands,
  and `docker compose up` to every service healthy.
The machine is shared and noisy: compare the ratios of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.support import E2E_ADMIN_PASSWORD, E2E_ADMIN_USER, Deployer  # noqa: E402
from tools.harness.targets import start_container_target  # noqa: E402
from tools.standins.build import ensure_standin_archive, standin_settings  # noqa: E402

PLAIN_PORT = 5001
CLIENTS = (2, 8)  # processes, threads
LOAD_SECONDS = 20
LATENCY_CALLS = 200

# MLflow's basic-auth server as its documentation starts it, beside ours: its own worker count,
# its own password check (the ini keeps only our store's settings, none of our credential cache).
PLAIN_SERVER = (
    "{ echo '[mlflow]'; grep -E '^(default_permission|database_uri|admin_username) =' /etc/mlflow-stack/auth.ini; } "
    "> /tmp/plain-auth.ini && "
    "MLFLOW_AUTH_CONFIG_PATH=/tmp/plain-auth.ini exec mlflow server --app-name basic-auth "
    f"--host 0.0.0.0 --port {PLAIN_PORT} --serve-artifacts --artifacts-destination s3://mlflow/"
)


def load_client(mode: str, uri: str, ca: str | None, *args: object) -> dict:
    env = {"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir(), "MLFLOW_TRACKING_URI": uri,
           "MLFLOW_TRACKING_USERNAME": E2E_ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": E2E_ADMIN_PASSWORD,
           "MLFLOW_DISABLE_TELEMETRY": "true", **({"REQUESTS_CA_BUNDLE": ca} if ca else {}),
           # A refused or timed-out call is a failure to count, not minutes of retries.
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "load_client.py"), mode, *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"load_client {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT=")))


def measure(uri: str, ca: str | None) -> dict:
    return {"latency": load_client("latency", uri, ca, LATENCY_CALLS),
            "load": load_client("load", uri, ca, LOAD_SECONDS, *CLIENTS)}


def memory_mib(target, name_filter: str) -> dict[str, float]:
    """Resident memory of each matching container (docker stats), MiB."""
    out = target.ssh(f"docker stats --no-stream --format '{{{{.Name}}}} {{{{.MemUsage}}}}' "
                     f"$(docker ps -q --filter name={shlex.quote(name_filter)})").stdout
    sizes = {}
    for line in out.splitlines():
        name, used = line.split()[0], line.split()[1]
        number = float(used.rstrip("KMGiB"))
        sizes[name] = round(number * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[used.lstrip("0123456789.")], 1)
    return sizes


def start_plain_server(target) -> None:
    target.ssh(
        "cd /srv/mlflow && docker compose run -d --rm --no-deps --name bench-plain "
        f"-p {PLAIN_PORT}:{PLAIN_PORT} --entrypoint sh mlflow -c {shlex.quote(PLAIN_SERVER)}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if target.ssh(f"curl -fsS http://127.0.0.1:{PLAIN_PORT}/health", check=False).returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError("the plain MLflow server did not come up:\n" + target.ssh("docker logs bench-plain", check=False).stderr[-3000:])


def bench_requests(target, deployer: Deployer) -> None:
    ca = str(deployer.workdir / "tls" / deployer.name / "ca.crt")
    ours = measure(f"https://{target.address}:5000", ca)
    ours_memory = memory_mib(target, "mlflow-mlflow")
    # One server at a time holds database connections (PostgreSQL allows 100; MLflow's default
    # pools could take more with both up): ours stops while the plain one is measured.
    servers = "mlflow mlflow-api"  # the default deploy's MLflow servers (TLS on): the API's and the rest's
    target.ssh(f"cd /srv/mlflow && docker compose stop {servers}")
    start_plain_server(target)
    plain = measure(f"http://{target.address}:{PLAIN_PORT}", None)
    plain_memory = memory_mib(target, "bench-plain")
    target.ssh("docker stop bench-plain", check=False)
    waited = " ".join(f"--service {name}" for name in (*servers.split(), "proxy"))
    target.ssh(f"cd /srv/mlflow && docker compose start {servers} && "
               f"sh wait-healthy.sh --project mlflow --timeout 300 {waited}")
    ours_again = measure(f"https://{target.address}:5000", ca)  # a noisy machine: ours before and after

    def line(label: str, result: dict, memory: dict) -> str:
        lat, load = result["latency"], result["load"]
        return (f"  {label:34} log_metric p50 {lat['p50_ms']:7.1f} ms  p95 {lat['p95_ms']:7.1f} ms | "
                f"{load['clients']} clients {load['req_per_s']:7.1f} req/s  p50 {load['p50_ms']:7.1f} ms  "
                f"p95 {load['p95_ms']:7.1f} ms  failures {load['failures']} | memory "
                + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in sorted(memory.items())))

    print("requests (real MLflow client on the control machine, keep-alive):")
    print(line("default deploy (auth + TLS proxy)", ours, ours_memory))
    print(line("plain basic-auth server (HTTP)", plain, plain_memory))
    print(line("default deploy, again", ours_again, ours_memory))
    best_latency = min(ours["latency"]["p50_ms"], ours_again["latency"]["p50_ms"])
    worst_rate = min(ours["load"]["req_per_s"], ours_again["load"]["req_per_s"])
    print(f"  ratios (worse of our two runs vs plain): throughput x{worst_rate / plain['load']['req_per_s']:.1f}, "
          f"latency p50 x{plain['latency']['p50_ms'] / max(ours['latency']['p50_ms'], ours_again['latency']['p50_ms']):.1f} "
          f"faster (best p50 {best_latency} ms)")


def bench_metrics(target, deployer: Deployer) -> None:
    """What metrics_networks costs a tracking call: the default deploy, then with MLflow's exporter
    (both servers) and the node exporter on, then the default again, on the same target."""
    ca = str(deployer.workdir / "tls" / deployer.name / "ca.crt")
    uri = f"https://{target.address}:5000"
    off = measure(uri, ca)
    control = target.ssh("echo ${SSH_CLIENT%% *}").stdout.strip()  # this machine, as the target sees it
    deployer.run(overrides={"metrics_networks": [control]}).check()
    on = measure(uri, ca)
    exporter_memory = memory_mib(target, "mlflow-node-exporter")
    deployer.run().check()
    off_again = measure(uri, ca)
    print("metrics (metrics_networks) on the tracking path:")
    for label, result in (("off", off), ("on", on), ("off, again", off_again)):
        lat, load = result["latency"], result["load"]
        print(f"  {label:10} log_metric p50 {lat['p50_ms']:7.1f} ms | {load['clients']} clients "
              f"{load['req_per_s']:7.1f} req/s  failures {load['failures']}")
    rate_off = min(off["load"]["req_per_s"], off_again["load"]["req_per_s"])
    print(f"  ratios (on vs the worse off run): throughput x{on['load']['req_per_s'] / rate_off:.2f}, latency p50 "
          f"x{on['latency']['p50_ms'] / max(off['latency']['p50_ms'], off_again['latency']['p50_ms']):.2f}; "
          "node exporter memory " + ", ".join(f"{mib:.0f} MiB" for mib in exporter_memory.values()))


IDLE_SECONDS = 60
# CPU time of every process on the target, the reaped ones included (a health probe is a process
# that exits: its time moves to its parent's cutime/cstime), in clock ticks.
CPU_TICKS = ("python3 -c 'import glob\nt = 0\nfor f in glob.glob(\"/proc/[0-9]*/stat\"):\n"
             "    try: t += sum(map(int, open(f).read().rsplit(\")\", 1)[1].split()[11:15]))\n"
             "    except OSError: pass\nprint(t)'")


def idle_cpu_percent(target) -> float:
    """What the healthy, unused stack costs the server: % of one core over IDLE_SECONDS."""
    out = target.ssh(f"{CPU_TICKS}; sleep {IDLE_SECONDS}; {CPU_TICKS}; getconf CLK_TCK").stdout.split()
    before, after, ticks_per_second = map(int, out)
    return 100 * (after - before) / ticks_per_second / IDLE_SECONDS


def bench_deploy(target, deployer: Deployer, first_seconds: float) -> None:
    reruns = [deployer.run(extra_args=("--debug",)).check() for _ in range(5)]
    for rerun in reruns:
        assert rerun.changed == [], rerun.changed
    target.ssh("cd /srv/mlflow && docker compose stop")
    started = time.monotonic()
    target.ssh("cd /srv/mlflow && docker compose up -d && sh wait-healthy.sh --project mlflow --timeout 600 "
               "--oneshot create-bucket --oneshot migrate-db --service postgres --service minio --service mlflow "
               "--service mlflow-api --service proxy")
    up_to_healthy = time.monotonic() - started
    idle = idle_cpu_percent(target)
    print("deploy:")
    print(f"  first run (fresh target, image build included): {first_seconds:.1f} s")
    print(f"  no-change rerun: median {statistics.median(r.seconds for r in reruns):.1f} s "
          f"(min {min(r.seconds for r in reruns):.1f}, max {max(r.seconds for r in reruns):.1f}), "
          f"{len(reruns[0].unchanged)} operations, 0 changed, {reruns[0].remote_commands} remote commands")
    print(f"  compose up -> all healthy (stopped stack): {up_to_healthy:.1f} s")
    print(f"  idle stack, {IDLE_SECONDS} s after it is healthy: {idle:.1f} % of a core (dockerd, containerd, "
          "the services and their health probes)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-requests", action="store_true")
    parser.add_argument("--skip-deploy", action="store_true", help="skip the rerun and restart figures")
    parser.add_argument("--metrics", action="store_true", help="also: the cost of metrics_networks on a tracking call")
    args = parser.parse_args()
    settings = {**standin_settings(ensure_standin_archive()), "mlflow_auth_admin_user": E2E_ADMIN_USER,
                "mlflow_auth_admin_password": E2E_ADMIN_PASSWORD}
    target = start_container_target(index=60, name="bench")
    try:
        workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        deployer = Deployer(target, {**settings, "tls_ca_local_dir": str(workdir / "tls")}, workdir=workdir)
        first = deployer.run().check()
        print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, machine: {platform.node()} ({platform.machine()}, "
              f"{len(os.sched_getaffinity(0))} cores)")
        if not args.skip_requests:
            bench_requests(target, deployer)
        if not args.skip_deploy:
            bench_deploy(target, deployer, first.seconds)
        if args.metrics:
            bench_metrics(target, deployer)
    finally:
        target.stop()


if __name__ == "__main__":
    main()
