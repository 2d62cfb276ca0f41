"""The README's settings table is the settings table of mlflow_stack/settings.py: same keys in
the same order, each default as Python source, each doc word for word."""

import json
import re
from pathlib import Path

from mlflow_stack.settings import SETTINGS

REPO = Path(__file__).resolve().parents[2]


def python_source(value) -> str:
    """A default as the README shows it: what one would write in group_data."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def readme_rows() -> list[tuple[str, str, str]]:
    return re.findall(r"^\| `([a-z0-9_]+)` \| `([^`]*)` \| (.+) \|$", (REPO / "README.md").read_text(), re.M)


def test_readme_table_is_the_settings_table():
    # On failure, the diff shows each missing or stale row as (key, default, doc) to paste.
    expected = [(setting.name, python_source(setting.default), setting.doc) for setting in SETTINGS]
    assert readme_rows() == expected

