"""Cases a new docker user ran into against ketchd: export of a running container, the
untagging of digest references by rmi, memory swap limits and repeated imports."""

from __future__ import annotations

import io
import tarfile

import docker
from docker.models.containers import Container

from support.daemon import KetchDaemon


def exported_names(container: Container) -> list[str]:
    data = b"".join(container.export())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [name.lstrip("./") for name in tar.getnames()]


def test_export_running_succeeds(running: Container) -> None:
    assert "bin/busybox" in exported_names(running)


def test_export_running_skips_proc(running: Container) -> None:
    assert "proc/self" not in exported_names(running)


def test_export_running_skips_volume(client: docker.DockerClient) -> None:
    container = client.containers.run(
        "busybox", ["sleep", "1000"], detach=True, volumes={"/tmp": {"bind": "/data"}}
    )
    try:
        names = exported_names(container)
    finally:
        container.remove(force=True)
    assert not [name for name in names if name.startswith("data/")]


def test_rmi_last_tag_untags_digests(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    repository = f"{daemon.registry_address}/trial/untag"
    client.images.get("busybox").tag(repository, "v1")
    client.images.push(repository, tag="v1")
    client.images.pull(repository, tag="v1")
    client.images.get("busybox").tag("trial/keep", "v1")
    try:
        digests = client.images.get(f"{repository}:v1").attrs["RepoDigests"]
        assert [d for d in digests if d.startswith(repository + "@")]

        result = client.api.remove_image(f"{repository}:v1")
        untagged = [entry["Untagged"] for entry in result if "Untagged" in entry]
        assert [name for name in untagged if name.startswith(repository + "@")]

        digests = client.images.get("trial/keep:v1").attrs["RepoDigests"]
        assert not [d for d in digests if d.startswith(repository + "@")]
    finally:
        client.api.remove_image("trial/keep:v1")
