"""Each test module's wall time (setup, calls and teardown of its tests) at the end of the run:
`make test` orders its queue of modules by these (tools/run_tests.py's MEASURED_SECONDS)."""

from collections import defaultdict
from pathlib import Path

import pytest

_seconds_by_module: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    _seconds_by_module[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if len(_seconds_by_module) < 2:
        return
    terminalreporter.section("wall time of each module")
    for module, seconds in sorted(_seconds_by_module.items(), key=lambda item: -item[1]):
        if seconds >= 1:  # the rest: unit modules of no weight
            terminalreporter.write_line(f"{seconds:8.1f} s  {module}")


@pytest.fixture(scope="session")
def preloaded_images() -> tuple[Path, ...]:
    """The suite's image archives (stand-ins, the MLflow image). Every target with Docker
    preinstalled has their images already (tests/harness/fixtures.py), as a server whose images
    were pulled or baked into its disk; the deploy is still handed the archives and finds their
    images there. Built on first use, cached by their inputs."""
    from tests.e2e.conftest import suite_archives

    return suite_archives()
