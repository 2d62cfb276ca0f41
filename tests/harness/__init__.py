"""Tests of the target harness (tools/harness) and the pytest fixtures that hand its targets to tests."""
