"""Image tarballs larger than the 16 MiB cap on JSON bodies, through ketch, docker and
docker-py: import, save, then load with each client."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ketch.api.connection import MAX_BODY_BYTES
from support.daemon import KetchDaemon

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)

REPOSITORY = "bodies/large"
# Random bytes, so that no compression on the way brings the tarball under the cap.
PAYLOAD_SIZE = MAX_BODY_BYTES + 2 * 1024 * 1024


@pytest.fixture(scope="module")
def client(daemon: KetchDaemon) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=daemon.host, timeout=300)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def image_id(client: docker.DockerClient) -> str:
    """Import a rootfs tarball larger than the cap and return the image's ID."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = PAYLOAD_SIZE
        tar.addfile(info, io.BytesIO(os.urandom(PAYLOAD_SIZE)))
    replies = client.api.import_image_from_data(buffer.getvalue(), repository=REPOSITORY, tag="v1")
    return json.loads(replies.strip().splitlines()[-1])["status"]


@pytest.fixture(scope="module")
def saved(
    client: docker.DockerClient, image_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    archive = tmp_path_factory.mktemp("bodies") / "large.tar"
    with archive.open("wb") as out:
        for chunk in client.images.get(image_id).save(named=True):
            out.write(chunk)
    return archive


def remove_image(client: docker.DockerClient) -> None:
    client.images.remove(f"{REPOSITORY}:v1", force=True)


def test_import_over_cap(client: docker.DockerClient, image_id: str) -> None:
    image = client.images.get(f"{REPOSITORY}:v1")
    assert image.id == image_id
    assert image.attrs["Size"] >= PAYLOAD_SIZE


def test_saved_archive_over_cap(saved: Path) -> None:
    assert saved.stat().st_size > MAX_BODY_BYTES


def test_ketch_load_over_cap(daemon: KetchDaemon, client: docker.DockerClient, saved: Path) -> None:
    remove_image(client)
    result = daemon.ketch("load", "-i", str(saved), timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"Loaded image: {REPOSITORY}:v1" in result.stdout


def test_docker_load_over_cap(
    daemon: KetchDaemon, client: docker.DockerClient, saved: Path
) -> None:
    remove_image(client)
    result = daemon.docker("load", "-i", str(saved), timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"Loaded image: {REPOSITORY}:v1" in result.stdout


def test_docker_py_load_over_cap(client: docker.DockerClient, image_id: str, saved: Path) -> None:
    remove_image(client)
    loaded = client.images.load(saved.read_bytes())
    assert [image.id for image in loaded] == [image_id]


def test_docker_cp_over_cap(
    daemon: KetchDaemon, client: docker.DockerClient, tmp_path: Path
) -> None:
    client.images.pull("busybox", tag="latest")
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(PAYLOAD_SIZE))
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    try:
        result = daemon.docker("cp", str(source), f"{container.id}:/tmp/", timeout=300)
        assert result.returncode == 0, result.stderr
        size = container.exec_run(["stat", "-c", "%s", "/tmp/payload.bin"]).output
        assert int(size) == PAYLOAD_SIZE
    finally:
        container.remove(force=True)


def test_json_body_over_cap_is_413(client: docker.DockerClient) -> None:
    labels = {"filler": "x" * (MAX_BODY_BYTES + 1)}
    with pytest.raises(docker.errors.APIError) as caught:
        client.api.create_container("busybox", ["true"], labels=labels)
    assert caught.value.status_code == 413
