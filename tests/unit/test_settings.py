"""The settings table: one entry per key, each default valid under its own rule, and the
config built from exactly these keys."""

from dataclasses import fields

import pytest

from mlflow_stack.config import StackConfig
from mlflow_stack.settings import DEFAULTS, SETTINGS


def test_each_setting_is_defined_once():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names)), [name for name in names if names.count(name) > 1]
    assert list(DEFAULTS) == names


def test_the_config_has_one_field_per_setting_in_the_table_order():
    # ...and the host's part of a cluster, which the inventory's groups decide (cluster.py).
    assert [field.name for field in fields(StackConfig)] == ["inventory_name", *DEFAULTS, "cluster"]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_default_follows_its_own_rule_and_the_doc_is_one_line(setting):
    assert setting.check(setting.default) is None
    assert setting.doc.strip() and "\n" not in setting.doc and "|" not in setting.doc  # a README table cell
