# Two commands for a newcomer on a fresh Debian machine (run as root):
#   make demo   - start a local disposable Debian 13 target and deploy the stack into it
#   make test   - unit tests, then the end-to-end suite (container targets and the VM)
VENV := .venv
PY := $(VENV)/bin/python
# The demo needs a container target only; the tests add the VM's qemu and their MLflow client.
DEMO_PACKAGES := debootstrap systemd-container iptables iproute2 docker.io openssh-client
HOST_PACKAGES := $(DEMO_PACKAGES) qemu-system-x86 qemu-utils e2fsprogs
# The venv's packages go in with uv (the same versions as pip, 8 s against pip's 94 s from an
# empty cache for the tests' set, docs/dev/measured.md), trusting the system's CA store as pip
# does here; with pip if uv fails. uv also resolves `make locks`.
UV_VERSION := 0.13.9
define install_requirements
$(PY) -m pip install -q uv==$(UV_VERSION) && $(VENV)/bin/uv pip install -q --system-certs --python $(PY) -r $(1) \
		|| $(PY) -m pip install -q -r $(1)
endef

.PHONY: setup demo demo-down test unit harness-test bench

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-test.txt
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null && command -v qemu-system-x86_64 >/dev/null && command -v dockerd >/dev/null && command -v ssh >/dev/null && command -v mkfs.ext4 >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(HOST_PACKAGES); }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PREWARM)
	$(call install_requirements,requirements-test.txt)
	touch $(VENV)/.demo-installed $@

$(VENV)/.demo-installed: requirements.txt
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null && command -v dockerd >/dev/null && command -v ssh >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEMO_PACKAGES); }
	test -x $(PY) || python3 -m venv $(VENV)
	$(call install_requirements,requirements.txt)
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m tools.demo up

demo-down: $(VENV)/.demo-installed
	$(PY) -m tools.demo down

unit: setup
	$(PY) -m pytest tests/unit

# Two lanes side by side (tools/run_tests.py): the VM tests (marked `vm`) beside unit, harness
# and stand-in tests, then both take end-to-end modules from one queue; each lane's log is kept
# under /tmp/mlflow-stack-test-logs/. All must pass.
# From an empty cache the first builds (debootstrap, stand-in images) start while uv installs
# the venv (tools/prewarm.py; its log beside the lanes' logs).
TEST_LOGS := $(or $(MLFLOW_STACK_TEST_LOGS),/tmp/mlflow-stack-test-logs)
test: PREWARM = mkdir -p $(TEST_LOGS) && ($(PY) -m tools.prewarm > $(TEST_LOGS)/prewarm.log 2>&1 &)
test: setup
	$(PY) tools/run_tests.py

harness-test: setup
	$(PY) -m pytest tests/harness

bench: setup
	$(PY) bench/bench.py

# Hash-locked requirements of the MLflow image, one per supported MLflow release (locks/README.md).
# `make locks` regenerates all of them; one: `.venv/bin/python tools/lock_mlflow.py 3.17.2`.
# LOCK_ARGS passes options, e.g. LOCK_ARGS="--exclude-newer 2026-11-28T17:00:00Z" to reproduce.
.PHONY: locks
locks:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(PY) tools/lock_mlflow.py --all $(LOCK_ARGS)
	$(PY) tools/schema_revisions.py
