"""Fixtures shared by the integration tests.

``daemon`` is one ketchd per test module (see support.daemon), ``client`` a docker-py
client for it with busybox already pulled, and ``running`` a busybox container that sleeps
until the test ends and is then removed. A module that needs another setup defines its
own fixture of the same name, which takes precedence over these.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

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


@pytest.fixture
def running(client: docker.DockerClient) -> Iterator[Container]:
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    try:
        yield container
    finally:
        container.remove(force=True)
