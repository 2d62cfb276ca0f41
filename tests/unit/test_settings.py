"""The settings table: one entry per key, each default valid under its own rule, and the
config built from exactly these keys."""

from dataclasses import fields

import pytest

from mlflow_stack.config import StackConfig
from mlflow_stack.config.settings import DEFAULTS, SETTINGS

from .helpers import make_config


def test_each_setting_is_defined_once():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names)), [name for name in names if names.count(name) > 1]
    assert list(DEFAULTS) == names


def test_the_config_has_one_field_per_setting_in_the_table_order():
    # ...then the inventory name, what the load reads from local files once, and the host's part
    # of a cluster, which the inventory's groups decide (config/cluster.py). Typed: each field's
    # type is written out (in Settings for a setting).
    assert [field.name for field in fields(StackConfig)] == [*DEFAULTS, "inventory_name", "mlflow_lock",
                                                               "postgres_ca_name", "s3_ca_name", "image_archive_names",
                                                               "cluster"]
    assert all(isinstance(field.type, str) and field.type for field in fields(StackConfig))


def test_a_derived_value_reads_no_file(monkeypatch, tmp_path):
    # Every property of StackConfig is computed from its fields: with every file gone it still answers.
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = make_config(postgres_external_host="db.example.org", postgres_password="x" * 20,
                         postgres_ca_file=str(ca), tls="off")
    ca.unlink()
    def no_io(*args, **kwargs):
        raise AssertionError(f"a derived value opened {args[0]!r}")
    monkeypatch.setattr("builtins.open", no_io)
    monkeypatch.setattr("io.open", no_io)
    for name, value in vars(StackConfig).items():
        if isinstance(value, property):
            getattr(config, name)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_default_follows_its_own_rule_and_the_doc_is_one_line(setting):
    assert setting.check(setting.default) is None
    assert setting.doc.strip() and "\n" not in setting.doc and "|" not in setting.doc  # a README table cell


def test_a_list_setting_is_kept_as_a_tuple_as_its_type_says():
    # The config is frozen: a list from host data becomes a tuple (read=), and the field's type
    # in Settings says so, for editors and type checkers.
    types = {field.name: field.type for field in fields(StackConfig)}
    for setting in SETTINGS:
        if isinstance(setting.default, list):
            assert setting.read is not None, setting.name
            assert types[setting.name].startswith("tuple["), (setting.name, types[setting.name])
