"""Fixtures shared by the integration tests.

``daemon`` is one ketchd per test module (see support.daemon), and ``client`` a docker-py
client for it with busybox already pulled. A module that needs another setup defines its
own fixture of the same name, which takes precedence over these.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from support.daemon import KetchDaemon, daemon_fixture


@pytest.fixture(scope="module")
def daemon() -> Iterator[KetchDaemon]:
    yield from daemon_fixture()


@pytest.fixture(scope="module")
def client(daemon: KetchDaemon) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=daemon.host)
    try:
        client.images.pull("busybox", tag="latest")
        yield client
    finally:
        client.close()
