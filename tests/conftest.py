"""Test-wide configuration.

Every test under ``tests/integration`` gets the ``integration`` mark: it needs root and a
Linux kernel with namespaces, cgroups and overlayfs, so it is skipped, with that reason,
when the tests do not run as root.
"""

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="integration tests need root")
    for item in items:
        if "/integration/" not in str(item.path):
            continue
        item.add_marker(pytest.mark.integration)
        if os.geteuid() != 0:
            item.add_marker(skip_root)


def _own_cgroup_directories(name: str) -> list[str]:
    """Return ``name`` under this process's cgroup in every v1 controller it is in."""
    directories = []
    with open("/proc/self/cgroup") as cgroup_file:
        for line in cgroup_file:
            _, controllers, path = line.strip().split(":", 2)
            for controller in controllers.split(","):
                if controller and not controller.startswith("name="):
                    directories.append(f"/sys/fs/cgroup/{controller}{path.rstrip('/')}/{name}")
    return directories


@pytest.fixture(scope="session", autouse=True)
def remove_parent_cgroups_made_by_tests():
    """Remove the ``ketch`` parent cgroups that the tests' containers made, once empty.

    The runtime puts each container's cgroup under ``ketch/`` below the caller's cgroup and
    leaves that parent in place for the next container, as dockerd leaves ``docker/``.
    """
    existing = {path for path in _own_cgroup_directories("ketch") if os.path.isdir(path)}
    yield
    for path in _own_cgroup_directories("ketch"):
        if path in existing or not os.path.isdir(path):
            continue
        try:
            os.rmdir(path)
        except OSError:
            pass
