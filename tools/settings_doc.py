"""Write docs/configuration.md from the settings table (mlflow_stack/config/settings.py).

    .venv/bin/python tools/settings_doc.py           # rewrite docs/configuration.md
    .venv/bin/python tools/settings_doc.py --check   # exit 1 with a diff when it is stale

The table is the only source: a setting's default, one-line doc, section and whether it is a
one-run parameter all come from its `Setting`. tests/unit/test_docs.py runs the check.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlflow_stack.config.settings import SETTINGS  # noqa: E402

OUTPUT = REPO / "docs" / "configuration.md"

INTRO = """\
# Configuration

Every setting of the stack: its default and what it does. Back to the [README](../README.md).

This file is generated from `mlflow_stack/config/settings.py` by `tools/settings_doc.py`; do not
edit it by hand (`.venv/bin/python tools/settings_doc.py` rewrites it, a unit test checks it).

Host data overrides a default: `group_data/all.py` for every host, `group_data/<group>.py` for
the hosts of one inventory group, per host in `inventory.py` (e.g. `{"mlflow_port": 8080}`), or
for one run with `pyinfra --data key=value`. Keys are flat; an override replaces the whole value
(no deep merge); a near-miss of a setting's name is refused. `group_data/all.py` ships empty of
settings, with examples of what labs change most: set only what differs.

Every bad setting is reported at once, with the key, the bad value and what is allowed, before
anything on the host changes; a secret's value is never shown. A secret setting (the
passwords, `mlflow_flask_server_secret_key`, `s3_secret_access_key`) can come from pyinfra's
environment instead of a file, as `MLFLOW_STACK_` and its name in upper case (e.g.
`MLFLOW_STACK_POSTGRES_PASSWORD`). Given passwords must be 12-128 characters of
`A-Z a-z 0-9 . _ ~ -` (they sit in a URI).
"""

RUN_PARAMETERS_INTRO = """\
## Run parameters

Parameters of one run, given as `--data key=value` to the command they belong to (e.g.
`pyinfra inventory.py restore.py --data restore_from=...`); never keep them in group_data.
"""

TABLE_HEAD = "| Setting | Default | What it does |\n|---|---|---|\n"


def python_source(value) -> str:
    """A default as one would write it in group_data."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def row(setting) -> str:
    return f"| `{setting.name}` | `{python_source(setting.default)}` | {setting.doc} |\n"


def sections(settings) -> dict[str, list]:
    """Settings by section, sections in the order of their first setting."""
    grouped: dict[str, list] = {}
    for setting in settings:
        grouped.setdefault(setting.section, []).append(setting)
    return grouped


def render(settings=SETTINGS) -> str:
    parts = [INTRO]
    for title, members in sections([s for s in settings if not s.run_parameter]).items():
        parts.append(f"\n## {title}\n\n" + TABLE_HEAD + "".join(row(s) for s in members))
    parts.append("\n" + RUN_PARAMETERS_INTRO)
    for title, members in sections([s for s in settings if s.run_parameter]).items():
        parts.append(f"\n### {title}\n\n" + TABLE_HEAD + "".join(row(s) for s in members))
    return "".join(parts)


def main(argv: list[str]) -> int:
    wanted = render()
    if argv[1:] == ["--check"]:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current == wanted:
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), wanted.splitlines(keepends=True),
            fromfile="docs/configuration.md", tofile="docs/configuration.md (from the settings)"))
        print("docs/configuration.md is stale: run .venv/bin/python tools/settings_doc.py", file=sys.stderr)
        return 1
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
