"""The README's settings table mirrors group_data/all.py: same keys, same defaults."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def defaults_source() -> dict[str, str]:
    source = (REPO / "group_data" / "all.py").read_text()
    return {
        node.targets[0].id: ast.get_source_segment(source, node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
    }


def readme_table() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| `([^`]*)` \|", (REPO / "README.md").read_text(), re.M)
    return dict(rows)


def test_readme_lists_every_setting_with_its_default():
    assert readme_table() == defaults_source()

