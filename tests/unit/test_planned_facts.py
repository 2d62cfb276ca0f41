"""planned_facts lists what deploy.py reads of a host that needs nothing (so a no-change rerun
asks the host once), and facts/prefetch.py answers with what the facts' own commands print."""

from __future__ import annotations

import subprocess

import pytest
from pyinfra.facts.files import File, Sha1File
from pyinfra.facts.server import Os

from mlflow_stack.facts.prefetch import _key, batch_script, parse_batch
from mlflow_stack.facts.planned import planned_facts

from .helpers import NON_DEFAULT, host_data, make_config
from .plan import plan
from .test_plan import converged_facts, deploy_file


@pytest.mark.parametrize("overrides", [{}, NON_DEFAULT, {"tls": "off"}, {"docker_source": "distro"}],
                         ids=["default", "non-default", "tls-off", "distro-docker"])
def test_a_converged_host_is_asked_only_what_was_prefetched(overrides):
    config = make_config(**overrides)
    distro = "debian13" if overrides.get("docker_source") == "distro" else "debian12"
    result = plan(deploy_file, config, converged_facts(config, distro), data=host_data(**overrides))
    assert result.prefetched == planned_facts(config)
    held = {_key(cls, (), kwargs) for cls, kwargs in result.prefetched}
    missed = sorted({(cls.__name__, key[1]) for cls, args, kwargs in result.calls
                     if (key := _key(cls, args, kwargs)) not in held})
    assert missed == []


def test_the_batch_runs_each_fact_s_own_command_and_parses_its_output(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    planned = [(Sha1File, {"path": str(tmp_path / "a.txt")}), (File, {"path": str(tmp_path / "missing")}),
               (File, {"path": str(tmp_path / "a.txt")}), (Os, {})]
    out = subprocess.run(["sh", "-c", batch_script(planned)], capture_output=True, text=True).stdout
    table = parse_batch(planned, out.splitlines())
    assert table[_key(Sha1File, (), planned[0][1])] == "f572d396fae9206628714fb2ce00f72e94f2258f"
    assert table[_key(File, (), planned[1][1])] is None
    assert table[_key(File, (), planned[2][1])]["size"] == 6
    assert table[_key(Os, (), {})] == "Linux"


def test_a_failed_command_is_not_held():
    planned = [(Os, {})]
    lines = ["@@mlflow-stack-fact 0 begin", "Linux", "", "@@mlflow-stack-fact 0 end 1"]
    assert parse_batch(planned, lines) == {}
