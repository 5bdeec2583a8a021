"""Test-wide configuration.

Every test under ``tests/integration`` gets the ``integration`` mark: it needs root and a
Linux kernel with namespaces, cgroups and overlayfs, so it is skipped, with that reason,
when the tests do not run as root.
"""

import os

import pytest

from support.cgroups import own_cgroup_directories


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="integration tests need root")
    for item in items:
        if "/integration/" not in str(item.path):
            continue
        item.add_marker(pytest.mark.integration)
        if os.geteuid() != 0:
            item.add_marker(skip_root)


@pytest.fixture(scope="session", autouse=True)
def remove_parent_cgroups_made_by_tests():
    """Remove the ``ketch`` parent cgroups that the tests' containers made, once empty.

    The runtime puts each container's cgroup under ``ketch/`` below the caller's cgroup and
    leaves that parent in place for the next container, as dockerd leaves ``docker/``.
    """
    existing = set(own_cgroup_directories("ketch"))
    yield
    for path in own_cgroup_directories("ketch"):
        if path in existing:
            continue
        try:
            path.rmdir()
        except OSError:
            pass
