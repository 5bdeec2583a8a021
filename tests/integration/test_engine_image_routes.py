"""The engine's image routes through the real docker CLI and docker-py against ketchd.

One ketchd per module (see support.daemon), with busybox in the registry beside it. Each
test uses image names of its own and removes them, so the tests run in any order.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest

from support.daemon import KetchDaemon

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def docker_ok(daemon: KetchDaemon, *args: str) -> str:
    result = daemon.docker(*args, timeout=120)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_tag_and_rmi_untags(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    docker_ok(daemon, "tag", "busybox", "routes/tagged:v1")
    tags = client.images.get("busybox").tags
    assert "routes/tagged:v1" in tags
    removed = docker_ok(daemon, "rmi", "routes/tagged:v1")
    assert removed.splitlines() == ["Untagged: routes/tagged:v1"]
    assert "busybox:latest" in client.images.get("busybox").tags


def test_rmi_missing_image(daemon: KetchDaemon) -> None:
    result = daemon.docker("rmi", "routes/missing:v1")
    assert result.returncode != 0
    assert "No such image: routes/missing:v1" in result.stderr


def test_rmi_untags_one_of_several(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    client.images.get("busybox").tag("routes/used", "v1")
    container = client.containers.create("routes/used:v1", ["true"])
    try:
        removed = docker_ok(daemon, "rmi", "routes/used:v1")
    finally:
        container.remove(force=True)
    assert removed.splitlines() == ["Untagged: routes/used:v1"]


def test_rmi_conflict_with_container(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    image = client.images.get("busybox")
    container = client.containers.create("busybox", ["true"])
    try:
        result = daemon.docker("rmi", image.id)
    finally:
        container.remove(force=True)
    assert result.returncode != 0
    assert f"conflict: unable to delete {image.short_id.removeprefix('sha256:')}" in result.stderr


def test_history_top_entry(client: docker.DockerClient) -> None:
    image = client.images.get("busybox")
    history = image.history()
    assert history[0]["Id"] == image.id
    assert "busybox:latest" in history[0]["Tags"]


def test_tag_push_and_pull_back(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    target = f"{daemon.registry_address}/routes/pushed:v1"
    docker_ok(daemon, "tag", "busybox", target)
    try:
        output = docker_ok(daemon, "push", target)
        assert "digest: sha256:" in output
    finally:
        docker_ok(daemon, "rmi", target)
    pulled = client.images.pull(f"{daemon.registry_address}/routes/pushed", tag="v1")
    assert pulled.id == client.images.get("busybox").id
    client.images.remove(target)


def test_push_missing_image(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        for _ in client.api.push("routes/never:v1", stream=True, decode=True):
            pass
    assert "No such image" in str(caught.value)


def test_login_succeeds(daemon: KetchDaemon) -> None:
    api = docker.APIClient(base_url=daemon.host)
    try:
        result = api.login("someone", "secret", registry=daemon.registry_address)
    finally:
        api.close()
    assert result["Status"] == "Login Succeeded"


def test_login_stores_nothing(daemon: KetchDaemon) -> None:
    # ketchd runs as the same user with the same HOME, so a stored credential would land
    # in this docker config; as with dockerd, the client is the one that stores it.
    api = docker.APIClient(base_url=daemon.host)
    try:
        api.login("someone", "secret", registry=daemon.registry_address)
    finally:
        api.close()
    config = Path.home() / ".docker" / "config.json"
    stored = json.loads(config.read_text()).get("auths", {}) if config.exists() else {}
    assert daemon.registry_address not in stored


def test_docker_cli_login(daemon: KetchDaemon) -> None:
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "docker"))
    command = ["docker", "login", "-u", "someone", "--password-stdin", daemon.registry_address]
    result = subprocess.run(
        command, input="secret\n", capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "Login Succeeded" in result.stdout


def test_docker_cli_history(daemon: KetchDaemon) -> None:
    output = docker_ok(daemon, "history", "--no-trunc", "--format", "{{.ID}}", "busybox")
    assert output.splitlines()[0].startswith("sha256:")


def test_docker_cli_image_prune(daemon: KetchDaemon) -> None:
    output = docker_ok(daemon, "image", "prune", "-f")
    assert "Total reclaimed space" in output


def test_save_and_load(daemon: KetchDaemon, client: docker.DockerClient, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    docker_ok(daemon, "save", "-o", str(archive), "busybox")
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    output = docker_ok(daemon, "load", "-i", str(archive))
    assert "Loaded image: busybox:latest" in output


def test_save_missing_image(daemon: KetchDaemon, tmp_path: Path) -> None:
    result = daemon.docker("save", "-o", str(tmp_path / "missing.tar"), "routes/missing:v1")
    assert result.returncode != 0
    assert "No such image" in result.stderr


def rootfs_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        content = b"imported\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_import_rootfs(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    buffer = io.BytesIO(rootfs_tarball())
    replies = client.api.import_image_from_data(
        buffer.getvalue(), repository="routes/imported", tag="v1"
    )
    status = json.loads(replies.strip().splitlines()[-1])["status"]
    assert status.startswith("sha256:")
    image = client.images.get("routes/imported:v1")
    assert image.id == status
    client.images.remove("routes/imported:v1")


def test_import_change_and_message(
    daemon: KetchDaemon, client: docker.DockerClient, tmp_path: Path
) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(rootfs_tarball())

    docker_ok(
        daemon, "import", "-m", "from the test", "-c", 'CMD ["/hello"]', "-c", "ENV A=1",
        "-c", "WORKDIR /work", str(tarball), "routes/changed:v1",
    )  # fmt: skip

    config = client.images.get("routes/changed:v1").attrs["Config"]
    assert config["Cmd"] == ["/hello"]
    assert config["Env"] == ["A=1"]
    assert config["WorkingDir"] == "/work"
    comments = docker_ok(daemon, "history", "--format", "{{.Comment}}", "routes/changed:v1")
    assert comments.strip() == "from the test"
    assert client.images.get("routes/changed:v1").attrs["Comment"] == "from the test"
    client.images.remove("routes/changed:v1")


def test_import_bad_change_stores_nothing(client: docker.DockerClient) -> None:
    before = {image.id for image in client.images.list(all=True)}

    with pytest.raises(docker.errors.APIError) as caught:
        client.api.import_image_from_data(rootfs_tarball(), changes=["BOGUS x"])

    assert caught.value.status_code == 400
    assert "invalid change 'BOGUS x'" in str(caught.value)
    assert {image.id for image in client.images.list(all=True)} == before


def test_prune_keeps_tagged(client: docker.DockerClient) -> None:
    result = client.images.prune()
    assert "SpaceReclaimed" in result
    assert "busybox:latest" in client.images.get("busybox").tags


def test_diff_and_commit(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    container = client.containers.run(
        "busybox", ["sh", "-c", "echo made > /tmp/made; rm /bin/ls"], detach=True
    )
    try:
        container.wait(timeout=60)
        changes = {(change["Kind"], change["Path"]) for change in container.diff()}
        assert (1, "/tmp/made") in changes
        assert (0, "/tmp") in changes
        assert (2, "/bin/ls") in changes
        docker_ok(
            daemon, "commit", "-m", "made a file", "-c", 'CMD ["cat", "/tmp/made"]',
            container.id, "routes/committed:v1",
        )  # fmt: skip
    finally:
        container.remove(force=True)
    try:
        output = client.containers.run("routes/committed:v1", remove=True)
        assert output == b"made\n"
        history = client.images.get("routes/committed:v1").history()
        assert history[0]["Comment"] == "made a file"
    finally:
        client.images.remove("routes/committed:v1")


def test_commit_missing_container(daemon: KetchDaemon) -> None:
    result = daemon.docker("commit", "routes-missing", "routes/never:v1")
    assert result.returncode != 0
    assert "No such container: routes-missing" in result.stderr


def test_history_sizes_sum_to_image(client: docker.DockerClient) -> None:
    image = client.images.get("busybox")
    total = sum(entry["Size"] for entry in image.history())
    assert total == image.attrs["Size"]


def test_docker_py_save_load(client: docker.DockerClient) -> None:
    image = client.images.get("busybox")
    data = b"".join(image.save(named=True))
    loaded = client.images.load(data)
    assert [each.id for each in loaded] == [image.id]


def test_docker_py_push(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    repository = f"{daemon.registry_address}/routes/pyshed"
    client.images.get("busybox").tag(repository, "v2")
    try:
        messages = list(client.api.push(repository, tag="v2", stream=True, decode=True))
    finally:
        client.images.remove(f"{repository}:v2")
    assert not [message for message in messages if "error" in message]
    assert any(message.get("aux", {}).get("Tag") == "v2" for message in messages)


def test_docker_py_prune_all_unused(client: docker.DockerClient) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty.txt"), io.BytesIO(b""))
    reply = client.api.import_image_from_data(buffer.getvalue())
    image_id = json.loads(reply.strip().splitlines()[-1])["status"]
    # The container keeps busybox in use, so only the imported image goes.
    container = client.containers.create("busybox", ["true"])
    try:
        result = client.images.prune(filters={"dangling": False})
    finally:
        container.remove(force=True)
    deleted = [entry.get("Deleted") for entry in result["ImagesDeleted"] or []]
    assert image_id in deleted
    assert "busybox:latest" in client.images.get("busybox").tags


def test_missing_route_is_501(client: docker.DockerClient) -> None:
    response = client.api._post(client.api._url("/swarm/init"), data="{}")
    assert response.status_code == 501
    assert response.json()["message"] == "ketch does not implement POST /swarm/init yet"


def test_unknown_path_is_404(client: docker.DockerClient) -> None:
    response = client.api._get(client.api._url("/no/such/path"))
    assert response.status_code == 404
