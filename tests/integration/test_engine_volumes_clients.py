"""Volumes through the ketch CLI and docker-py against a real ketchd.

One ketchd per module (see support.daemon). Each test names its containers and volumes
and removes them; every test checks that no volume mount is left behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest

from support.daemon import KetchDaemon, ketch_ok


@pytest.fixture(autouse=True)
def no_mount_left(daemon: KetchDaemon) -> Iterator[None]:
    yield
    prefix = str(daemon.data_root / "volumes") + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        left = [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]
    assert left == []


# ketch CLI


def test_ketch_volume_lifecycle(daemon: KetchDaemon) -> None:
    assert ketch_ok(daemon, "volume", "create", "--label", "team=a", "cli1") == "cli1\n"
    listed = ketch_ok(daemon, "volume", "ls", "--filter", "label=team=a")
    assert listed.splitlines() == ["DRIVER    VOLUME NAME", "local     cli1"]
    assert ketch_ok(daemon, "volume", "ls", "-q", "--filter", "name=cli1") == "cli1\n"
    names = ketch_ok(daemon, "volume", "ls", "--format", "{{.Name}} {{.Labels}}")
    assert "cli1 team=a\n" in names
    inspected = json.loads(ketch_ok(daemon, "volume", "inspect", "cli1"))
    assert inspected[0]["Labels"] == {"team": "a"}
    assert ketch_ok(daemon, "volume", "inspect", "-f", "{{.Driver}}", "cli1") == "local\n"
    assert ketch_ok(daemon, "volume", "rm", "cli1") == "cli1\n"


def test_ketch_volume_errors(daemon: KetchDaemon) -> None:
    missing = daemon.ketch("volume", "inspect", "nosuch3")
    assert missing.returncode == 1
    assert "get nosuch3: no such volume" in missing.stderr
    bad = daemon.ketch("volume", "create", "-o", "type=tmpfs", "-o", "o=size=lots", "bad3")
    assert bad.returncode == 1
    assert "o=size=lots" in bad.stderr
    assert "bad3" not in ketch_ok(daemon, "volume", "ls", "-q")
    assert daemon.ketch("volume", "rm", "-f", "nosuch3").returncode == 0


def test_ketch_run_volume_and_rm_in_use(daemon: KetchDaemon) -> None:
    ketch_ok(daemon, "run", "--name", "kuser1", "-v", "kdata1:/data", "busybox", "sh", "-c",
             "echo saved > /data/f")  # fmt: skip
    try:
        busy = daemon.ketch("volume", "rm", "kdata1")
        assert busy.returncode == 1
        assert "volume is in use" in busy.stderr
        output = ketch_ok(daemon, "run", "--rm", "--volumes-from", "kuser1:ro", "busybox", "cat",
                          "/data/f")  # fmt: skip
        assert output == "saved\n"
    finally:
        ketch_ok(daemon, "rm", "kuser1")
    ketch_ok(daemon, "volume", "rm", "kdata1")


def test_ketch_mount_flag_volume(daemon: KetchDaemon) -> None:
    mount = "type=volume,source=kmount1,target=/m,volume-label=via=mount"
    ketch_ok(daemon, "run", "--rm", "--mount", mount, "busybox", "touch", "/m/x")
    labels = ketch_ok(daemon, "volume", "inspect", "-f", "{{json .Labels}}", "kmount1")
    assert json.loads(labels) == {"via": "mount"}
    ketch_ok(daemon, "volume", "rm", "kmount1")


def test_ketch_rm_v_and_prune(daemon: KetchDaemon) -> None:
    before = set(ketch_ok(daemon, "volume", "ls", "-q").split())
    ketch_ok(daemon, "create", "--name", "kanon1", "-v", "/anon", "busybox")
    ketch_ok(daemon, "rm", "-v", "kanon1")
    assert set(ketch_ok(daemon, "volume", "ls", "-q").split()) == before

    ketch_ok(daemon, "create", "--name", "kanon2", "-v", "/anon", "busybox")
    ketch_ok(daemon, "rm", "kanon2")
    ketch_ok(daemon, "volume", "create", "knamed2")
    output = ketch_ok(daemon, "volume", "prune", "-f")
    assert output.startswith("Deleted Volumes:\n")
    assert "knamed2" in ketch_ok(daemon, "volume", "ls", "-q")
    output = ketch_ok(daemon, "volume", "prune", "-a", "-f")
    assert "knamed2\n" in output
    assert set(ketch_ok(daemon, "volume", "ls", "-q").split()) == before - {"knamed2"}


def test_ketch_system_prune_volumes(daemon: KetchDaemon) -> None:
    before = set(ketch_ok(daemon, "volume", "ls", "-q").split())
    ketch_ok(daemon, "volume", "create", "ksys1")
    ketch_ok(daemon, "create", "--name", "ksys1", "-v", "/anon", "busybox")
    ketch_ok(daemon, "rm", "ksys1")
    ketch_ok(daemon, "system", "prune", "-f")
    assert len(set(ketch_ok(daemon, "volume", "ls", "-q").split()) - before) == 2
    output = ketch_ok(daemon, "system", "prune", "-f", "--volumes")
    assert "Deleted Volumes:" in output
    assert set(ketch_ok(daemon, "volume", "ls", "-q").split()) - before == {"ksys1"}
    ketch_ok(daemon, "volume", "rm", "ksys1")


def test_ketch_system_df_volumes(daemon: KetchDaemon) -> None:
    ketch_ok(daemon, "run", "--rm", "-v", "kdf1:/data", "busybox", "sh", "-c",
             "head -c 3000 /dev/zero > /data/f")  # fmt: skip
    try:
        output = ketch_ok(daemon, "system", "df")
        line = next(line for line in output.splitlines() if line.startswith("Local Volumes"))
        assert "3kB" in line
    finally:
        ketch_ok(daemon, "volume", "rm", "kdf1")


# docker-py


def test_docker_py_volumes(client: docker.DockerClient) -> None:
    volume = client.volumes.create("py1", labels={"made": "by-py"})
    try:
        assert client.volumes.get("py1").attrs["Labels"] == {"made": "by-py"}
        assert "py1" in [item.name for item in client.volumes.list(filters={"label": "made"})]
        output = client.containers.run(
            "busybox",
            ["sh", "-c", "echo py > /v/f && cat /v/f"],
            volumes={"py1": {"bind": "/v", "mode": "rw"}},
            remove=True,
        )
        assert output == b"py\n"
        output = client.containers.run(
            "busybox", ["cat", "/v/f"], volumes=["py1:/v:ro"], remove=True
        )
        assert output == b"py\n"
    finally:
        volume.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("py1")


def test_docker_py_remove_in_use(client: docker.DockerClient) -> None:
    client.volumes.create("py2")
    container = client.containers.create("busybox", "true", volumes={"py2": {"bind": "/v"}})
    try:
        with pytest.raises(docker.errors.APIError) as raised:
            client.volumes.get("py2").remove()
        assert raised.value.response.status_code == 409
    finally:
        container.remove(v=True)
    client.volumes.get("py2").remove()


def test_docker_py_prune(client: docker.DockerClient) -> None:
    client.volumes.create("py3", labels={"prune": "me"})
    result = client.volumes.prune(filters={"label": "prune=me", "all": "true"})
    assert result["VolumesDeleted"] == ["py3"]


def test_prune_before_api_1_42_takes_named(daemon: KetchDaemon) -> None:
    old = docker.APIClient(base_url=daemon.host, version="1.41")
    new = docker.APIClient(base_url=daemon.host, version="1.43")
    try:
        new.create_volume("py4", labels={"era": "api"})
        assert new.prune_volumes(filters={"label": "era=api"})["VolumesDeleted"] == []
        assert old.prune_volumes(filters={"label": "era=api"})["VolumesDeleted"] == ["py4"]
    finally:
        old.close()
        new.close()
