"""pytest fixtures for e2e tests. In a conftest.py:  from tests.harness.fixtures import *  # noqa"""
from __future__ import annotations

import pytest

from .targets import Target, start_container_target, start_vm_target

__all__ = ["container_target", "container_target_factory", "vm_target"]

# Index ranges: module fixture uses 1, the factory hands out 10..99, the VM uses 200.
_CONTAINER_INDEX = 1
_FACTORY_FIRST_INDEX = 10
_VM_INDEX = 200


@pytest.fixture(scope="module")
def container_target():
    """A fresh nspawn container target for the test module; stopped afterwards."""
    target = start_container_target(index=_CONTAINER_INDEX)
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture
def container_target_factory():
    """Call factory() (or factory(index=N, name=...)) to start extra container targets.

    Each gets a distinct index; all are stopped at the end of the test.
    """
    started: list[Target] = []
    used: set[int] = set()

    def factory(index: int | None = None, name: str | None = None) -> Target:
        if index is None:
            index = _FACTORY_FIRST_INDEX
            while index in used:
                index += 1
        used.add(index)
        target = start_container_target(index=index, name=name)
        started.append(target)
        return target

    try:
        yield factory
    finally:
        errors = []
        for t in reversed(started):
            try:
                t.stop()
            except Exception as e:  # stop the others anyway
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def vm_target():
    """A fresh qemu VM (resumed from the cached snapshot) for the test module; stopped afterwards."""
    target = start_vm_target(index=_VM_INDEX)
    try:
        yield target
    finally:
        target.stop()
