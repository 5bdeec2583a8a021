"""Real Docker clients against the API server with a fake engine: docker-py and, when it
is installed, the docker CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from support.fake_engine import ServedEngine, serve_fake_engine


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    directory = Path(tempfile.mkdtemp(prefix="ketch-api-", dir="/tmp"))
    try:
        with serve_fake_engine(directory / "api.sock") as served:
            served.engine.add_image("busybox:latest")
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def client(served: ServedEngine) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=served.host, timeout=10)
    try:
        yield client
    finally:
        client.close()


def test_dockerpy_ping(client: docker.DockerClient) -> None:
    assert client.ping() is True


def test_dockerpy_negotiates_version(client: docker.DockerClient) -> None:
    assert client.api.api_version == "1.45"
    assert client.version()["Version"] == "0.1.0"


def test_dockerpy_containers_list(served: ServedEngine, client: docker.DockerClient) -> None:
    created = client.containers.create("busybox", ["sleep"], name="web")
    assert client.containers.list() == []
    created.start()
    listed = client.containers.list()
    assert [container.name for container in listed] == ["web"]
    assert listed[0].status == "running"


def test_dockerpy_not_found_error(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.NotFound, match="No such container: nope"):
        client.containers.get("nope")


def test_dockerpy_images_list(client: docker.DockerClient) -> None:
    assert [image.tags for image in client.images.list()] == [["busybox:latest"]]


def test_dockerpy_wait_and_remove(client: docker.DockerClient) -> None:
    container = client.containers.create("busybox", ["exit", "4"])
    container.start()
    assert container.wait(timeout=5) == {"StatusCode": 4, "Error": None}
    container.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container.id)


DOCKER = shutil.which("docker") or "docker"
HAVE_DOCKER = shutil.which("docker") is not None


def run_docker(served: ServedEngine, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ketch-docker-config-") as config:
        env = dict(os.environ, DOCKER_HOST=served.host, DOCKER_CONFIG=config)
        command = [DOCKER, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.skipif(not HAVE_DOCKER, reason="the docker CLI is not installed")
def test_docker_cli_version(served: ServedEngine) -> None:
    result = run_docker(served, "version", "--format", "{{.Server.APIVersion}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.45"


@pytest.mark.skipif(not HAVE_DOCKER, reason="the docker CLI is not installed")
def test_docker_cli_run_output_and_status(served: ServedEngine) -> None:
    result = run_docker(served, "run", "--rm", "busybox", "echo", "hi", ";", "exit", "5")
    assert result.stdout == "hi\n", result.stderr
    assert result.returncode == 5


@pytest.mark.skipif(not HAVE_DOCKER, reason="the docker CLI is not installed")
def test_docker_cli_ps(served: ServedEngine) -> None:
    run_docker(served, "run", "-d", "--name", "sleeper", "busybox", "sleep")
    result = run_docker(served, "ps", "--format", "{{.Names}} {{.Status}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sleeper Up 3 seconds\n"
