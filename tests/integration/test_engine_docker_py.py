"""docker-py's high-level API against a real ketchd: the everyday container operations."""

from __future__ import annotations

import time

import pytest

docker = pytest.importorskip("docker")


def test_run_returns_output(client: docker.DockerClient) -> None:
    output = client.containers.run("busybox", ["echo", "from docker-py"], remove=True)
    assert output == b"from docker-py\n"


def test_run_failure_raises_container_error(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.ContainerError) as raised:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert raised.value.exit_status == 3


def test_detached_logs_exec_stop(client: docker.DockerClient) -> None:
    container = client.containers.run(
        "busybox", ["sh", "-c", "echo started; sleep 300"], detach=True, name="py-detached"
    )
    try:
        deadline = time.monotonic() + 10
        while b"started" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert container.logs() == b"started\n"
        result = container.exec_run(["sh", "-c", "echo $((6*7))"])
        assert (result.exit_code, result.output) == (0, b"42\n")
        container.stop(timeout=1)
        container.reload()
        assert container.status == "exited"
    finally:
        container.remove(force=True)


def test_list_filters_and_labels(client: docker.DockerClient) -> None:
    container = client.containers.create("busybox", ["true"], labels={"team": "py"})
    try:
        found = client.containers.list(all=True, filters={"label": "team=py"})
        assert [c.id for c in found] == [container.id]
    finally:
        container.remove()


def test_wait_returns_status(client: docker.DockerClient) -> None:
    container = client.containers.run("busybox", ["sh", "-c", "exit 5"], detach=True)
    try:
        assert container.wait(timeout=30)["StatusCode"] == 5
    finally:
        container.remove()


def test_stats_one_shot(client: docker.DockerClient) -> None:
    container = client.containers.run("busybox", ["sleep", "300"], detach=True)
    try:
        stats = container.stats(stream=False)
        assert stats["memory_stats"]["usage"] > 0
    finally:
        container.remove(force=True)


def test_put_and_get_archive(client: docker.DockerClient) -> None:
    import io
    import tarfile

    container = client.containers.run("busybox", ["sleep", "300"], detach=True)
    try:
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            payload = b"archived\n"
            info = tarfile.TarInfo("greeting")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        assert container.put_archive("/tmp", data.getvalue())
        chunks, stat = container.get_archive("/tmp/greeting")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile("greeting")
            assert member is not None
            assert member.read() == b"archived\n"
        assert stat["name"] == "greeting"
    finally:
        container.remove(force=True)
