"""The parts of a cluster: roles from inventory groups, each role's services, ports and
secrets, the backends a tracking server derives from the data host, and bad inventories
refused with a message naming what to change."""

from __future__ import annotations

import inspect
import re

import pytest
import uvicorn
import yaml

from mlflow_stack.config.cluster import Cluster, ClusterError, Member, cluster_of, member_address, role_of
from mlflow_stack.config import ConfigError
from mlflow_stack.steps.secrets import secret_values
from mlflow_stack.services import port_settings, secret_keys
from mlflow_stack.steps.stack_files import compose_file, render
from tests.unit.helpers import make_config

DATA = Member("data.lab", "10.0.0.10")
TRACKING = (Member("mlflow-1.lab", "10.0.0.11"), Member("mlflow-2.lab", "10.0.0.12"))
BALANCER = Member("mlflow.lab", "10.0.0.20")
SECRETS = dict(postgres_password="pg-secret-0001", minio_root_password="minio-secret-0001",
               mlflow_auth_admin_password="admin-secret-0001", mlflow_flask_server_secret_key="flask-secret-0001")


def part(role: str, **members) -> Cluster:
    return Cluster(role=role, data_host=members.get("data_host", DATA), tracking_servers=TRACKING,
                   balancers=(BALANCER,), public_host=members.get("public_host", BALANCER.name))


def member_config(role: str, name: str, cluster: Cluster | None = None, **overrides):
    from mlflow_stack.config import load_config
    from tests.unit.helpers import host_data

    return load_config(host_data(**{"tls": "off", **SECRETS, **overrides}), name, environ={},
                       cluster=cluster or part(role))


# --- roles from groups ---------------------------------------------------------------------

@pytest.mark.parametrize("groups, role", [
    (("mlflow_servers",), "standalone"), (("mlflow_data_hosts",), "data"),
    (("mlflow_tracking_servers", "gpu"), "tracking"), (("mlflow_balancers",), "balancer")])
def test_the_role_is_the_group(groups, role):
    assert role_of(groups) == role


def test_a_host_in_two_role_groups_is_refused():
    with pytest.raises(ClusterError, match="one part of a cluster"):
        role_of(("mlflow_data_hosts", "mlflow_tracking_servers"))


class FakeData(dict):
    """pyinfra's HostData as cluster_of reads it: get() and dict()."""

    def dict(self):
        return dict(self)


class FakeHost:
    def __init__(self, name, groups, **data):
        self.name, self.groups, self.data = name, groups, FakeData(data)


class FakeInventory:
    def __init__(self, *hosts):
        self.hosts = hosts

    def get_group(self, group, default=None):
        return [h for h in self.hosts if group in h.groups] or default


def inventory(*extra, **shared):
    hosts = [FakeHost("data.lab", ("mlflow_data_hosts",), **shared),
             FakeHost("mlflow-1.lab", ("mlflow_tracking_servers",), **shared),
             FakeHost("mlflow-2.lab", ("mlflow_tracking_servers",), ssh_hostname="10.0.0.12", **shared),
             FakeHost("mlflow.lab", ("mlflow_balancers",), mlflow_public_host="mlflow.example.org", **shared),
             *extra]
    return FakeInventory(*hosts)


RESOLVE = {"data.lab": "10.0.0.10", "mlflow-1.lab": "10.0.0.11", "mlflow.lab": "10.0.0.20"}.__getitem__


def test_members_are_found_by_group_and_resolved_once_here():
    inv = inventory()
    cluster = cluster_of(inv.hosts[1], inv, resolve=RESOLVE)
    assert cluster.role == "tracking"
    assert cluster.data_host == Member("data.lab", "10.0.0.10")
    # The second's ssh_hostname is its address: not resolved.
    assert cluster.tracking_servers == (Member("mlflow-1.lab", "10.0.0.11"), Member("mlflow-2.lab", "10.0.0.12"))
    assert cluster.public_host == "mlflow.example.org" and cluster.leader.name == "mlflow-1.lab"


def test_a_standalone_server_beside_a_cluster_is_not_part_of_it():
    inv = inventory(FakeHost("solo.lab", ("mlflow_servers",)))
    assert cluster_of(inv.hosts[-1], inv, resolve=RESOLVE) == Cluster("standalone")


@pytest.mark.parametrize("hosts, message", [
    (lambda: [FakeHost("x.lab", ("mlflow_data_hosts",))], "mlflow_data_hosts has 2 hosts"),
    (lambda: [FakeHost("y.lab", ("mlflow_balancers",))], "mlflow_balancers has 2 hosts"),
], ids=["two data hosts", "two balancers"])
def test_more_than_one_data_host_or_balancer_is_refused(hosts, message):
    inv = inventory(*hosts())
    with pytest.raises(ClusterError, match=message):
        cluster_of(inv.hosts[0], inv, resolve=RESOLVE)


def test_a_data_host_needs_tracking_servers_and_a_balancer():
    inv = FakeInventory(FakeHost("data.lab", ("mlflow_data_hosts",)))
    with pytest.raises(ClusterError) as error:
        cluster_of(inv.hosts[0], inv, resolve=RESOLVE)
    assert "mlflow_tracking_servers is empty" in str(error.value)
    assert "needs a host in mlflow_balancers" in str(error.value)


def test_members_that_disagree_on_a_shared_setting_are_refused_without_showing_secrets():
    inv = inventory()
    inv.hosts[2].data.update(minio_bucket="other", postgres_password="hunter2-secret")
    with pytest.raises(ClusterError) as error:
        cluster_of(inv.hosts[0], inv, resolve=RESOLVE)
    assert "minio_bucket differs" in str(error.value) and "'other'" in str(error.value)
    assert "postgres_password differs" in str(error.value) and "hunter2-secret" not in str(error.value)


def test_an_unresolvable_member_names_cluster_address():
    def fail(name):
        raise OSError("Name or service not known")

    with pytest.raises(ClusterError, match="set cluster_address"):
        member_address("ghost.lab", {}, resolve=fail)
    assert member_address("ghost.lab", {"cluster_address": "10.1.2.3"}, resolve=fail) == "10.1.2.3"


# --- each role's services, ports, secrets -----------------------------------------------------

def test_a_data_host_runs_the_backends_and_publishes_them_to_the_cluster():
    config = member_config("data", DATA.name)
    assert config.service_names == ("postgres", "minio", "create-bucket", "jobs")
    assert port_settings(config.services) == ("postgres_port", "minio_api_port", "minio_console_port")
    assert set(secret_values(config)) == {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"}
    assert config.firewall_sources == ("10.0.0.11", "10.0.0.12", "10.0.0.20")
    assert config.firewall_ports == (5432, 9000)
    compose = yaml.safe_load(compose_file(config))
    assert compose["services"]["postgres"]["ports"] == ["0.0.0.0:5432:5432"]
    assert set(compose["services"]) == {"postgres", "minio", "create-bucket", "jobs"}


def test_a_tracking_server_uses_the_data_host_and_the_balancers_name_for_s3():
    config = member_config("tracking", TRACKING[1].name)
    assert config.service_names == ("migrate-db", "mlflow", "jobs")
    assert (config.postgres_external_host, config.postgres_external_port) == ("10.0.0.10", 5432)
    assert config.s3_endpoint_url == "http://mlflow.lab:9000"
    assert config.s3_secret_access_key == SECRETS["minio_root_password"]
    assert set(secret_keys(config.services)) == {"POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY",
                                                  "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    # The balancer keeps the Host header: MLflow must accept the cluster's name.
    assert "mlflow.lab:5000" in config.allowed_hosts
    compose = yaml.safe_load(compose_file(config))
    assert compose["services"]["mlflow"]["extra_hosts"] == ["mlflow.lab:10.0.0.20"]
    assert set(compose["services"]) == {"migrate-db", "mlflow", "jobs"}
    assert not config.keeps_cluster_state  # the second one: the first keeps the users, runs gc


def test_only_the_first_tracking_server_keeps_the_clusters_state():
    assert member_config("tracking", TRACKING[0].name).keeps_cluster_state
    assert not member_config("data", DATA.name).keeps_cluster_state
    assert make_config().keeps_cluster_state


def test_a_balancer_by_an_ip_address_needs_no_extra_host():
    config = member_config("tracking", TRACKING[0].name, cluster=part("tracking", public_host="10.0.0.20"))
    assert config.cluster_extra_hosts == ()
    assert config.s3_endpoint_url == "http://10.0.0.20:9000"


def test_the_balancer_spreads_over_the_tracking_servers_and_fronts_the_data_hosts_s3():
    config = member_config("balancer", BALANCER.name)
    assert config.service_names == ("balancer",)
    assert secret_values(config) == {}
    conf = render("balancer.conf.j2", config)
    assert "server 10.0.0.11:5000 max_fails=1" in conf and "server 10.0.0.12:5000 max_fails=1" in conf
    assert "proxy_pass http://10.0.0.10:9000;" in conf
    # nginx: a block that sets any header inherits none, so every header is set once, above the
    # servers (else the Host header MLflow checks and SigV4 signs is lost).
    assert "proxy_set_header" not in conf[conf.index("upstream tracking_servers"):]
    assert "proxy_set_header Host $http_host;" in conf
    compose = yaml.safe_load(compose_file(config))
    assert compose["services"]["balancer"]["ports"] == ["0.0.0.0:5000:5000", "0.0.0.0:9000:9000"]
    assert not config.builds_mlflow_image


def test_without_a_data_host_the_balancer_fronts_no_s3():
    external = dict(postgres_external_host="db.example.org", s3_endpoint_url="https://s3.example.org",
                    s3_access_key="AKIAEXAMPLE", s3_secret_access_key="s3-secret-value")
    cluster = part("balancer", data_host=None)
    config = member_config("balancer", BALANCER.name, cluster=cluster, **external)
    assert "9000" not in render("balancer.conf.j2", config)
    assert port_settings(config.services) == ("mlflow_port",)
    tracking = member_config("tracking", TRACKING[0].name, cluster=part("tracking", data_host=None), **external)
    assert tracking.postgres_external_host == "db.example.org"


# --- refused settings -------------------------------------------------------------------------

def test_tls_and_generated_passwords_are_refused_in_a_cluster():
    from mlflow_stack.config import load_config
    from tests.unit.helpers import host_data

    with pytest.raises(ConfigError) as error:
        load_config(host_data(tls="self-signed"), TRACKING[0].name, environ={}, cluster=part("tracking"))
    message = str(error.value)
    assert "tls = 'self-signed' in a cluster" in message
    for key in ("postgres_password", "minio_root_password", "mlflow_flask_server_secret_key"):
        assert f"{key}: required in a cluster" in message


def test_backends_the_cluster_decides_cannot_be_set_on_its_members():
    with pytest.raises(ConfigError, match="s3_endpoint_url: set by the cluster"):
        member_config("tracking", TRACKING[0].name, s3_endpoint_url="https://s3.example.org")
    with pytest.raises(ConfigError, match="postgres_external_host: a data host runs the bundled"):
        member_config("data", DATA.name, postgres_external_host="db.example.org")


def test_tracking_servers_without_a_data_host_need_external_backends():
    with pytest.raises(ConfigError, match="postgres_external_host: required for a tracking server"):
        member_config("tracking", TRACKING[0].name, cluster=part("tracking", data_host=None))


# --- backups ------------------------------------------------------------------------------------

@pytest.mark.parametrize("role, name", [("data", DATA.name), ("tracking", TRACKING[0].name),
                                        ("tracking", TRACKING[1].name), ("balancer", BALANCER.name)])
def test_each_member_plans_only_its_part(role, name):
    """The whole deploy planned on a fresh host for each part: facts in, commands out."""
    from tests.unit.plan import plan
    from tests.unit.test_plan import all_steps, fresh_facts

    config = member_config(role, name)
    result = plan(all_steps, config, fresh_facts())
    names = [op.name.rsplit(" | ", 1)[-1] for op in result.ops if op.commands]
    text = result.text()
    # The backup timer on the data host only (backup.sh dumps through its postgres container).
    assert ("/etc/systemd/system/mlflow-backup.timer" in result.uploads) == (role == "data")
    # The MLflow image is built where a service runs it (create-bucket on the data host).
    assert any("Build the MLflow image" in n for n in names) == (role != "balancer")
    assert (f"{config.stack_dir}/mlflow.env" in result.uploads) == (role == "tracking")
    assert (f"{config.stack_dir}/balancer.conf" in result.uploads) == (role == "balancer")
    # The users are kept, once, by the first tracking server.
    assert ("auth_users.py apply" in text) == (name == TRACKING[0].name)
    if role == "tracking":
        assert names.index("Check the external backends from the host") < names.index(
            "Start the stack (a service is not healthy)")
    for secret in SECRETS.values():
        assert secret not in text


@pytest.mark.parametrize("role, name, action, message", [
    ("tracking", TRACKING[0].name, "backup.py", "--limit data.lab"),
    ("balancer", BALANCER.name, "backup.py", "--limit data.lab"),
])
def test_backup_and_restore_name_where_to_run_them_in_a_cluster(role, name, action, message, monkeypatch):
    from mlflow_stack.verbs import backup

    monkeypatch.setattr(backup, "host", type("H", (), {"name": name})())
    with pytest.raises(backup.DeployError, match=message):
        backup.require_bundled_backends(member_config(role, name), action)
    backup.require_bundled_backends(member_config("data", DATA.name), "backup.py")  # the data host backs up


@pytest.mark.parametrize("role, name, own_turn", [
    ("data", DATA.name, 0), ("balancer", BALANCER.name, 1), ("tracking", TRACKING[0].name, 2),
    ("tracking", TRACKING[1].name, 3), ("standalone", "solo.lab", 3)])
def test_every_host_plans_every_turn_in_order_and_starts_in_its_own(role, name, own_turn):
    """pyinfra orders operations across hosts by each host's own sequence of them: with every
    turn in every host's sequence, the data host starts before the balancer, the balancer
    before the first tracking server, that one before the rest, whatever else each host does."""
    from mlflow_stack.steps.stack import start_stack
    from tests.unit.plan import plan
    from tests.unit.test_plan import fresh_facts

    config = make_config(name) if role == "standalone" else member_config(role, name)
    result = plan(start_stack, config, fresh_facts())
    starts = [op for op in result.ops if "Start the stack" in op.name]
    turns = ["the data host's turn", "the balancer's turn", "the first tracking server's turn",
             "the other servers' turn"]
    assert len(starts) == 4
    for index, (op, turn) in enumerate(zip(starts, turns)):
        if index == own_turn:
            assert "[" not in op.name and op.commands, op.name  # its own: planned to run
        else:
            assert op.name.endswith(f"[{turn}]") and not op.commands, op.name  # skipped here


# --- restore.py on a cluster --------------------------------------------------------------------


def _run_with(hosts: list[str], limit: list[str] | None = None):
    """pyinfra's state for a run over `hosts`, limited to `limit` (--limit) when given."""
    from pyinfra.api import Config, Inventory, State

    inventory = Inventory((hosts, {}))
    return State(inventory, Config(), initial_limit=[inventory.get_host(n) for n in limit] if limit else None)


MEMBERS = [DATA.name, *(m.name for m in TRACKING), BALANCER.name]


@pytest.mark.parametrize("limit, missing", [
    (None, None), (MEMBERS, None), ([DATA.name, TRACKING[0].name], TRACKING[1].name),
    ([DATA.name], f"{TRACKING[0].name}, {TRACKING[1].name}")])
def test_a_cluster_is_restored_as_a_whole_or_not_at_all(limit, missing, monkeypatch):
    from mlflow_stack.verbs import restore

    monkeypatch.setattr(restore, "state", _run_with(MEMBERS, limit))
    monkeypatch.setattr(restore, "host", type("H", (), {"name": DATA.name})())
    config = member_config("data", DATA.name, restore_from="host:/srv/mlflow/backups/mlflow-backup-1")
    if missing is None:
        restore.check_restore_allowed(config, 0)
    else:
        with pytest.raises(restore.DeployError, match=f"and {missing} (is|are) not in this run"):
            restore.check_restore_allowed(config, 0)


TURNS = ["Stop MLflow while the data host restores", "Restore ", "Start MLflow on the first tracking server",
         "Start MLflow on the other tracking servers", "Give the restored user store this server's admin and users"]


@pytest.mark.parametrize("role, name, own", [
    ("data", DATA.name, {1}), ("tracking", TRACKING[0].name, {0, 2, 4}), ("tracking", TRACKING[1].name, {0, 3}),
    ("balancer", BALANCER.name, set())])
def test_every_member_plans_every_restore_turn_and_runs_its_own(role, name, own, monkeypatch, tmp_path):
    """The data host restores between the tracking servers' stop and their start, the first
    tracking server (which migrates) before the others: every member plans every turn, so
    pyinfra orders them across hosts."""
    from mlflow_stack.verbs import restore
    from tests.unit.plan import plan
    from tests.unit.test_plan import fresh_facts

    monkeypatch.setattr(restore, "require_whole_cluster", lambda config: None)
    monkeypatch.setattr(restore, "run_smoke_test", lambda config: None)
    backup = tmp_path / "mlflow-backup-1"
    backup.mkdir()
    (backup / "manifest.json").write_text('{"name": "mlflow-backup-1", "schema_revision": "dc11669786a5"}')
    for filename in restore.BACKUP_FILES:
        if not (backup / filename).exists():
            (backup / filename).write_text("x")
    config = member_config(role, name, restore_from=str(backup))
    result = plan(restore.restore_backup, config, fresh_facts())
    turns = [op for op in result.ops if any(op.name.split(" | ", 1)[-1].startswith(turn) for turn in TURNS)]
    assert len(turns) == len(TURNS), [op.name for op in result.ops]
    for index, op in enumerate(turns):
        assert op.name.split(" | ", 1)[-1].startswith(TURNS[index])
        if index in own:
            assert "[" not in op.name and op.commands, op.name
        else:
            assert op.name.endswith("]") and not op.commands, op.name
    commands = " ".join(c for op in result.ops for c in op.commands)
    if role == "data":  # nothing to stop: its tracking servers stopped MLflow
        assert "--stop" not in commands and "--service postgres --service minio" in commands


def test_the_balancer_closes_idle_connections_before_the_tracking_servers_do():
    """A kept-alive connection the server closes as nginx sends a request on it costs a client a
    502 (nginx resends no POST): nginx's idle timeout must be the shorter."""
    conf = render("balancer.conf.j2", member_config("balancer", BALANCER.name))
    upstream = conf[conf.index("upstream tracking_servers"):conf.index("server {")]
    seconds = re.search(r"keepalive_timeout (\d+)s;", upstream)
    assert seconds, upstream
    server_idle_timeout = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert int(seconds.group(1)) < server_idle_timeout
