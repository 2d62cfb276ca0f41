"""Write what the deploy would do to a directory, to prove a refactor changes nothing.

    .venv/bin/python tools/render_snapshot.py /tmp/before   # on the old commit
    .venv/bin/python tools/render_snapshot.py /tmp/after    # on the new one
    diff -r /tmp/before /tmp/after

For the default config, one that differs in every templated value and one with metrics: every uploaded file,
byte for byte, plus the commands and the facts asked (the remote round trips) of deploy.py
on a fresh and on a converged host. No host is contacted (tests/unit/plan.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.helpers import NON_DEFAULT, host_data, make_config  # noqa: E402
from tests.unit.plan import plan  # noqa: E402
from tests.unit.test_plan import converged_facts, deploy_file, fresh_facts  # noqa: E402


def snapshot(out: Path) -> None:
    # metrics: the exporters and the proxy's /metrics block (off in both others).
    for label, overrides in (("default", {}), ("non_default", NON_DEFAULT),
                             ("metrics", {"metrics_networks": ["10.0.5.0/24", "192.0.2.7"]})):
        config = make_config(**overrides)
        for host_state, facts in (("fresh", fresh_facts()), ("converged", converged_facts(config))):
            result = plan(deploy_file, config, facts, data=host_data(**overrides))
            base = out / label / host_state
            for dest, data in result.uploads.items():
                path = base / "uploads" / dest.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            base.mkdir(parents=True, exist_ok=True)
            (base / "commands.txt").write_text("".join(f"{op.name}\n    {c}\n" for op in result.ops for c in op.commands))
            (base / "facts.txt").write_text("".join(f"{name} {key}\n" for name, key in result.asked))


if __name__ == "__main__":
    snapshot(Path(sys.argv[1]))
