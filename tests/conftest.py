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
