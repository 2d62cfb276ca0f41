"""uninstall.py's plan: facts in, commands out. The data stays unless asked for by name."""

from __future__ import annotations

import pytest

from mlflow_stack.verbs import uninstall as uninstall_module
from mlflow_stack.config import ConfigError, load_config

from .helpers import HOST_NAME, host_data, make_config
from .plan import plan
from .test_plan import converged_facts


def deployed_facts(config) -> dict:
    facts = converged_facts(config)
    facts["ComposeServices"] = {config.compose_project: {"mlflow": {"state": "running"}}}
    facts["LinuxName"] = "Debian"
    facts["Which"] = {"userdel": "/usr/sbin/userdel"}
    facts["DockerImages"] = [{"RepoTags": ["mlflow-stack/mlflow:3.17.2-abc", "mlflow-stack/mlflow:3.17.1-def"]},
                             {"RepoTags": ["postgres:17"]}]
    return facts


def test_a_deployed_host_loses_the_stack_and_keeps_its_data():
    config = make_config()
    result = plan(uninstall_module.uninstall, config, deployed_facts(config))
    text = result.text()
    assert "docker compose --project-name mlflow down --remove-orphans" in text
    assert "docker image rm mlflow-stack/mlflow:3.17.1-def mlflow-stack/mlflow:3.17.2-abc" in text
    assert "postgres:17" not in text
    for kept in ("/srv/mlflow/data", "/srv/mlflow/.env", "/srv/mlflow/users.env", "/srv/mlflow/ca",
                 "/srv/mlflow/tls", "/srv/mlflow/backups"):
        assert not [command for command in result.commands if command.endswith(kept) or f"{kept} " in command
                    or f"{kept}/" in command and "rm" in command], kept
    assert "userdel" not in text and "apt-get" not in text


def test_an_uninstalled_host_plans_nothing():
    config = make_config()
    facts = {"ComposeServices": {}, "DockerImages": [], "Os": "Linux", "LinuxName": "Debian"}
    assert plan(uninstall_module.uninstall, config, facts).changing == {}


def test_data_goes_only_when_confirmed_by_the_host_s_name():
    with pytest.raises(ConfigError) as caught:
        load_config(host_data(uninstall_data=True), HOST_NAME, environ={})
    assert f"confirm with uninstall_confirm = {HOST_NAME!r}" in str(caught.value)
    with pytest.raises(ConfigError):
        load_config(host_data(uninstall_data=True, uninstall_confirm="another.host"), HOST_NAME, environ={})
    config = make_config(uninstall_data=True, uninstall_confirm=HOST_NAME)
    text = plan(uninstall_module.uninstall, config, deployed_facts(config)).text()
    assert "/srv/mlflow" in text and "userdel" in text
