"""Test-wide configuration: the integration tests need root and a Linux kernel with
namespaces, cgroups and overlayfs; they are skipped, with the reason, anywhere else."""

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip_root = pytest.mark.skip(reason="integration tests need root")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip_root)
