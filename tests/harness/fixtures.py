"""pytest fixtures handing tools/harness targets to tests. In a conftest.py:  from tests.harness.fixtures import *  # noqa"""
from __future__ import annotations

import pytest

from tools.harness.targets import IndexInUseError, Target, free_index, start_container_target, start_vm_target

__all__ = ["container_target", "container_target_factory", "vm_target"]

# Index ranges (10.99.<index>.0/30): module fixture 1..9, factory 10..49 (50 = `make demo`,
# 60 = bench), VM 200. Free indexes are picked so parallel sessions/workers do not collide.
_MODULE_RANGE = (1, 9)
_FACTORY_RANGE = (10, 49)
VM_INDEX = 200


def _start_in_range(first: int, last: int, name: str | None = None,
                    skip: set[int] = frozenset(), docker: bool = True, images: tuple = ()) -> Target:
    index = first
    while True:
        index = free_index(index, last)
        if index not in skip:
            try:
                return start_container_target(index=index, name=name or f"ct{index}", docker=docker,
                                              images=images if docker else ())
            except IndexInUseError:
                pass  # another process claimed it between the check and the start
        index += 1


def docker_preinstalled(module) -> bool:
    """Debian's Docker, with the suite's images loaded (the `preloaded_images` fixture), already
    on the module's targets, unless it tests the install from apt and the archives' upload
    (`FRESH_DEBIAN = True` in the module): see tools/harness/rootfs.docker_packages()."""
    return not getattr(module, "FRESH_DEBIAN", False)


@pytest.fixture(scope="module")
def container_target(request, preloaded_images):
    """A fresh nspawn container target for the test module; stopped afterwards."""
    target = _start_in_range(*_MODULE_RANGE, docker=docker_preinstalled(request.module), images=preloaded_images)
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture
def container_target_factory(request, preloaded_images):
    """Call factory() (or factory(index=N, name=..., docker=...)) to start extra container targets.

    Each gets a distinct index; all are stopped at the end of the test.
    """
    started: list[Target] = []
    used: set[int] = set()

    def factory(index: int | None = None, name: str | None = None, docker: bool | None = None) -> Target:
        docker = docker_preinstalled(request.module) if docker is None else docker
        if index is None:
            target = _start_in_range(*_FACTORY_RANGE, name=name, skip=used, docker=docker, images=preloaded_images)
        else:
            target = start_container_target(index=index, name=name, docker=docker,
                                            images=preloaded_images if docker else ())
        used.add(target.index)
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
def vm_target(preloaded_images):
    """A fresh qemu VM (resumed from the cached snapshot) for the test module; stopped afterwards."""
    target = start_vm_target(index=VM_INDEX, images=preloaded_images)
    try:
        yield target
    finally:
        target.stop()
