"""`make test`'s tiers (tools/run_tests.py) run every end-to-end module exactly once."""

from pathlib import Path

from tools import run_tests


def test_every_end_to_end_module_runs_in_exactly_one_tier():
    modules = sorted(str(path.relative_to(run_tests.REPO)) for path in Path(run_tests.REPO, "tests/e2e").glob("test_*.py"))
    tiers = run_tests.tiers()
    in_tiers = [arg for args in tiers.values() for arg in args if arg.startswith("tests/e2e/")]
    assert sorted(in_tiers) == modules
    assert set(run_tests.E2E_BESIDE) <= set(modules)
    assert ("e2e" in tiers) == bool(run_tests.E2E_BESIDE)  # no empty pytest
    assert "tests/unit" in tiers["main"] and "-m" in tiers["vm"] and tiers["vm"][tiers["vm"].index("-m") + 1] == "vm"
