"""What a lab's training jobs do to the tracking server, measured from a client machine.

    python bench/load_client.py latency CALLS
    python bench/load_client.py load SECONDS PROCESSES THREADS

MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD (and REQUESTS_CA_BUNDLE for TLS) come
from the environment, as for any MLflow client. The real MLflow client, one keep-alive session
per process (MLflow's own).

- latency: one client, CALLS `MlflowClient().log_metric` after a warm-up; p50/p95 in ms.
- load: PROCESSES x THREADS clients for SECONDS, each on its own run, three `log_metric` to one
  `log_batch` of 10 metrics; requests per second, p50/p95, failures.

Prints RESULT=<json>.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import threading
import time

from mlflow import MlflowClient
from mlflow.entities import Metric

EXPERIMENT = "bench-load"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def experiment_id(client: MlflowClient) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    return found.experiment_id if found else client.create_experiment(EXPERIMENT)


def latency(calls: int) -> dict:
    client = MlflowClient()
    run = client.create_run(experiment_id(client))
    for step in range(10):  # warm-up: connection, TLS session, the server's caches
        client.log_metric(run.info.run_id, "warm-up", float(step), step=step)
    seconds = []
    for step in range(calls):
        started = time.perf_counter()
        client.log_metric(run.info.run_id, "latency", float(step), step=step)
        seconds.append(time.perf_counter() - started)
    client.set_terminated(run.info.run_id)
    return {"calls": calls, "p50_ms": round(statistics.median(seconds) * 1000, 1),
            "p95_ms": round(percentile(seconds, 0.95) * 1000, 1)}


def _process(seconds: float, threads: int, start_at: float, queue) -> None:
    client = MlflowClient()
    exp = experiment_id(client)
    runs = [client.create_run(exp).info.run_id for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads

    def work(index: int) -> None:
        run_id, mine = runs[index], latencies[index]
        while time.time() < start_at:
            time.sleep(0.01)
        step, end = 0, start_at + seconds
        while time.time() < end:
            started = time.perf_counter()
            try:
                if step % 4 == 3:
                    now = int(time.time() * 1000)
                    client.log_batch(run_id, metrics=[Metric(f"m{i}", float(step), now, step) for i in range(10)])
                else:
                    client.log_metric(run_id, "loss", float(step), step=step)
                mine.append(time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - a failed call is a result, counted
                failures[index] += 1
            step += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(([x for xs in latencies for x in xs], sum(failures)))


def load(seconds: float, processes: int, threads: int) -> dict:
    queue = multiprocessing.get_context("fork").Queue()
    start_at = time.time() + 5  # every process has its runs before the clock starts
    children = [multiprocessing.get_context("fork").Process(target=_process, args=(seconds, threads, start_at, queue))
                for _ in range(processes)]
    for child in children:
        child.start()
    results = [queue.get(timeout=seconds + 300) for _ in children]
    for child in children:
        child.join()
    latencies = [x for xs, _ in results for x in xs]
    return {"clients": processes * threads, "seconds": seconds, "requests": len(latencies),
            "failures": sum(f for _, f in results), "req_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "latency":
        result = latency(int(sys.argv[2]))
    else:
        result = load(float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    print("RESULT=" + json.dumps(result))
