"""The host's metrics for the lab's Prometheus (node exporter): CPU, memory, load, disks and
filesystems, and the backup and gc timers' last results, which their units write as a textfile
(files/host/job-result.sh). Runs with metrics_networks; the proxy serves it as /metrics/host to
those networks only (its MetricsRoute)."""

from __future__ import annotations

from .model import ComposeContext, ConfigFile, MetricsRoute, Service, Topology, base, healthcheck, volumes

ORDER = 58
PORT = 9100
# The timers' results, in the stack directory (job-result.sh writes them there).
TEXTFILE_DIR = "metrics"


def service(topology: Topology) -> Service | None:
    if not (topology.metrics and topology.proxied):
        return None
    return Service("node-exporter", image="node_exporter_image", tls_only=True,
                   config_files=(ConfigFile(TEXTFILE_DIR, "/textfile"),), metrics=MetricsRoute("/metrics/host", PORT),
                   compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    return {
        **base(service, context, restart="unless-stopped"),
        # The host's /proc, /sys and root, read-only: the host's figures, not the container's.
        "command": ["--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root",
                    "--collector.textfile.directory=/textfile", f"--web.listen-address=:{PORT}"],
        "volumes": ["/proc:/host/proc:ro", "/sys:/host/sys:ro", "/:/host/root:ro", *volumes(service, context)],
        # The official image is busybox-based: wget, no bash.
        "healthcheck": healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/"], context.config),
    }
