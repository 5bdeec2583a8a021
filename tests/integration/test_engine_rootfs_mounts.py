"""A stopped container's overlayfs rootfs is unmounted, and mounted again, with its
writable layer, when the container starts or its files are read."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

SCRIPT = "echo run >> /runs; cat /runs"


@pytest.fixture
def exited(client: docker.DockerClient) -> Iterator[Container]:
    container = client.containers.run("busybox", ["sh", "-c", SCRIPT], detach=True)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        yield container
    finally:
        container.remove(force=True)


def merged_dir(container: Container) -> Path:
    container.reload()
    return Path(container.attrs["GraphDriver"]["Data"]["MergedDir"])


def test_exited_rootfs_unmounted(exited: Container) -> None:
    merged = merged_dir(exited)
    assert not os.path.ismount(merged)
    assert (merged.parent / "upper" / "runs").is_file()


def test_running_rootfs_mounted(client: docker.DockerClient) -> None:
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    try:
        assert os.path.ismount(merged_dir(container))
    finally:
        container.remove(force=True)


def test_restart_keeps_writes(exited: Container) -> None:
    exited.start()
    assert exited.wait(timeout=60)["StatusCode"] == 0
    assert exited.logs() == b"run\nrun\nrun\n"
    assert not os.path.ismount(merged_dir(exited))


def test_copy_from_exited(exited: Container) -> None:
    stream, _ = exited.get_archive("/runs")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile("runs")
        assert member is not None
        assert member.read() == b"run\n"


def test_copy_into_exited(exited: Container) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("copied")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))
    assert exited.put_archive("/", buffer.getvalue())
    upper = merged_dir(exited).parent / "upper"
    assert (upper / "copied").read_bytes() == b"in\n"


def test_export_exited(exited: Container) -> None:
    data = b"".join(exited.export())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "runs" in [name.lstrip("./") for name in tar.getnames()]


def test_size_of_exited(client: docker.DockerClient, exited: Container) -> None:
    summaries = client.api.containers(all=True, size=True, filters={"id": exited.id})
    assert summaries[0]["SizeRw"] > 0


def test_commit_exited(client: docker.DockerClient, exited: Container) -> None:
    image = exited.commit("mounts/committed", "v1")
    try:
        output = client.containers.run(image.id, ["cat", "/runs"], remove=True)
        assert output == b"run\n"
    finally:
        client.images.remove(image.id, force=True)
