"""Cases a new docker user ran into against ketchd: export of a running container, the
untagging of digest references by rmi, memory swap limits, repeated imports, system df
sizes, and what commit and diff record."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import tarfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from support.daemon import VENV_BIN, KetchDaemon, docker_ok


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


def memory_cgroup(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise AssertionError(f"process {pid} has no memory cgroup")


@pytest.fixture
def swap_limited(daemon: KetchDaemon) -> Iterator[str]:
    if not Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists():
        pytest.skip("the kernel has no swap accounting (memory.memsw files)")
    docker_ok(daemon, "run", "-d", "--name", "swap", "-m", "32m", "--memory-swap", "64m",
              "busybox", "sleep", "1000")  # fmt: skip
    try:
        yield docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "swap").strip()
    finally:
        daemon.docker("rm", "-f", "swap")


def test_run_memory_swap_limit(swap_limited: str) -> None:
    memsw = memory_cgroup(int(swap_limited)) / "memory.memsw.limit_in_bytes"
    assert memsw.read_text() == f"{64 << 20}\n"


def test_update_memory_swap_raises(daemon: KetchDaemon, swap_limited: str) -> None:
    docker_ok(daemon, "update", "--memory", "96m", "--memory-swap", "192m", "swap")
    cgroup = memory_cgroup(int(swap_limited))
    assert (cgroup / "memory.memsw.limit_in_bytes").read_text() == f"{192 << 20}\n"
    assert (cgroup / "memory.limit_in_bytes").read_text() == f"{96 << 20}\n"


def test_update_memory_swap_lowers(daemon: KetchDaemon, swap_limited: str) -> None:
    docker_ok(daemon, "update", "--memory", "16m", "--memory-swap", "24m", "swap")
    cgroup = memory_cgroup(int(swap_limited))
    assert (cgroup / "memory.limit_in_bytes").read_text() == f"{16 << 20}\n"
    assert (cgroup / "memory.memsw.limit_in_bytes").read_text() == f"{24 << 20}\n"


def test_update_memory_swap_inspect(daemon: KetchDaemon, swap_limited: str) -> None:
    docker_ok(daemon, "update", "--memory", "32m", "--memory-swap", "48m", "swap")
    swap = docker_ok(daemon, "inspect", "--format", "{{.HostConfig.MemorySwap}}", "swap")
    assert swap == f"{48 << 20}\n"


def test_update_swap_below_memory(daemon: KetchDaemon, swap_limited: str) -> None:
    result = daemon.docker("update", "--memory", "64m", "--memory-swap", "48m", "swap")
    assert result.returncode != 0
    assert "memoryswap limit should be larger than memory limit" in result.stderr


def rootfs_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("hello.txt")
        member.size = 6
        tar.addfile(member, io.BytesIO(b"hello\n"))
    return buffer.getvalue()


def test_import_twice_new_ids(client: docker.DockerClient) -> None:
    data = rootfs_tarball()
    ids = []
    try:
        for tag in ("one", "two"):
            client.api.import_image_from_data(data, repository="trial/imported", tag=tag)
            ids.append(client.images.get(f"trial/imported:{tag}").id)
    finally:
        for tag in ("one", "two"):
            client.api.remove_image(f"trial/imported:{tag}", force=True)
    assert ids[0] != ids[1]


def read_until_exit(fd: int, timeout: float) -> bytes:
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break  # EIO: the other side of the pty closed
        if not data:
            break
        output += data
    return output


def run_in_pty(argv: list[str], rows: int, columns: int) -> tuple[int, bytes]:
    """Run ``argv`` on a new pty of ``rows`` x ``columns``; return its exit status and
    output."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.execv(argv[0], argv)
    try:
        output = read_until_exit(fd, timeout=60)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def test_exec_tty_size(daemon: KetchDaemon, running: Container) -> None:
    ketch = str(VENV_BIN / "ketch")
    argv = [ketch, "-H", daemon.host, "exec", "-it", running.id, "stty", "size"]
    status, output = run_in_pty(argv, 33, 101)
    assert status == 0, output
    assert b"33 101" in output


def test_run_tty_size(daemon: KetchDaemon) -> None:
    ketch = str(VENV_BIN / "ketch")
    argv = [ketch, "-H", daemon.host, "run", "--rm", "-it", "busybox", "stty", "size"]
    status, output = run_in_pty(argv, 29, 97)
    assert status == 0, output
    assert b"29 97" in output


def send_until_output(fd: int, command: bytes, expected: bytes) -> bytes:
    """Write ``command`` to the pty every half second until ``expected`` is read back."""
    output = b""
    deadline = time.monotonic() + 60
    while expected not in output and time.monotonic() < deadline:
        os.write(fd, command)
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            output += os.read(fd, 4096)
    return output


def test_exec_tty_resized_on_sigwinch(daemon: KetchDaemon, running: Container) -> None:
    ketch = str(VENV_BIN / "ketch")
    argv = [ketch, "-H", daemon.host, "exec", "-it", running.id, "sh"]
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 70, 0, 0))
        os.execv(argv[0], argv)
    try:
        output = send_until_output(fd, b"stty size\r", b"20 70")
        # The kernel sends SIGWINCH to the ketch CLI, the pty's foreground process.
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 123, 0, 0))
        output += send_until_output(fd, b"stty size\r", b"41 123")
        os.write(fd, b"exit\r")
        output += read_until_exit(fd, timeout=30)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert b"41 123" in output
    assert os.waitstatus_to_exitcode(status) == 0, output


def test_system_df_verbose(daemon: KetchDaemon, running: Container) -> None:
    result = daemon.ketch("system", "df", "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    image_row = lines[lines.index("Images space usage:") + 3]
    assert image_row.split()[:2] == ["busybox", "latest"]
    container_row = lines[lines.index("Containers space usage:") + 3]
    assert container_row.split()[0] == running.id[:12]


def test_stats_network_counters(running: Container) -> None:
    stats = running.stats(stream=False)
    assert "eth0" in stats.get("networks", {})


def test_system_df_counts_shared_layers(client: docker.DockerClient, running: Container) -> None:
    running.exec_run(["touch", "/committed-file"])
    derived = running.commit("trial/df-derived", "v1")
    try:
        usage = client.df()
        images = {image["Id"]: image for image in usage["Images"]}
        base = client.images.get("busybox").id
        base_summary = images[base]
        derived_summary = images[derived.id]

        # busybox's layer is in both images but counts once in the total.
        total_of_sizes = sum(image["Size"] for image in usage["Images"])
        assert usage["LayersSize"] <= total_of_sizes - base_summary["Size"]
        assert base_summary["SharedSize"] == base_summary["Size"]
        assert derived_summary["SharedSize"] == base_summary["Size"]
        assert base_summary["Containers"] == 1
        assert derived_summary["Containers"] == 0
    finally:
        client.images.remove(derived.id)


def test_image_list_shared_size(client: docker.DockerClient) -> None:
    summaries = client.api.get(client.api._url("/images/json"), params={"shared-size": "1"}).json()
    assert all(summary["SharedSize"] >= 0 for summary in summaries)


def top_layer_names(image: docker.models.images.Image) -> list[str]:
    """Return the member names of the image's last layer, read from ``docker save``."""
    data = b"".join(image.save())
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest_file = archive.extractfile("manifest.json")
        assert manifest_file is not None
        top_layer = json.loads(manifest_file.read())[0]["Layers"][-1]
        layer_file = archive.extractfile(top_layer)
        assert layer_file is not None
        with tarfile.open(fileobj=io.BytesIO(layer_file.read())) as layer:
            return layer.getnames()


def test_diff_leaves_out_mount_targets(running: Container) -> None:
    assert not running.diff()


def test_diff_lists_real_etc_change(running: Container) -> None:
    running.exec_run(["touch", "/etc/motd"])
    changes = {change["Path"]: change["Kind"] for change in running.diff()}
    assert changes == {"/etc": 0, "/etc/motd": 1}


def test_commit_leaves_out_mount_targets(running: Container) -> None:
    running.exec_run(["touch", "/etc/motd"])
    image = running.commit("trial/no-targets", "v1")
    try:
        assert sorted(top_layer_names(image)) == ["etc", "etc/motd"]
    finally:
        image.client.images.remove(image.id)


def test_commit_history_created_by(client: docker.DockerClient, running: Container) -> None:
    image = running.commit("trial/history", "v1", message="first try")
    try:
        newest = client.api.history(image.id)[0]
        assert newest["CreatedBy"] == "sleep 1000"
        assert newest["Comment"] == "first try"
    finally:
        client.images.remove(image.id)


def test_create_rejects_missing_cpu(client: docker.DockerClient) -> None:
    missing = str(os.cpu_count() or 1)
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create("busybox", ["true"], cpuset_cpus=missing)
    assert caught.value.status_code == 400
    assert f"Requested CPUs are not available - requested {missing}" in str(caught.value)


def test_create_rejects_missing_node(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create("busybox", ["true"], cpuset_mems="63")
    assert caught.value.status_code == 400
    assert "Requested memory nodes are not available - requested 63" in str(caught.value)


@pytest.mark.parametrize(
    ("network", "ipam"),
    [
        ("none", {"IPv4Address": "172.18.0.50"}),
        ("none", {"IPv6Address": "fd00::50"}),
        ("host", {"IPv4Address": "172.18.0.50"}),
        ("bridge", {"IPv6Address": "fd00::50"}),
    ],
)
def test_static_ip_needs_user_network(
    client: docker.DockerClient, network: str, ipam: dict[str, str]
) -> None:
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "HostConfig": {"NetworkMode": network},
        "NetworkingConfig": {"EndpointsConfig": {network: {"IPAMConfig": ipam}}},
    }
    reply = client.api.post(client.api._url("/containers/create"), json=body)
    assert reply.status_code == 400
    assert "supported on user defined networks only" in reply.json()["message"]


def test_bind_mount_missing_source(client: docker.DockerClient, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    mount = docker.types.Mount("/data", str(missing), type="bind")
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create("busybox", ["true"], mounts=[mount])
    assert caught.value.status_code == 400
    expected = f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    assert expected in str(caught.value)


def test_pid_mode_invalid(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create("busybox", ["true"], pid_mode="nope")
    assert caught.value.status_code == 400
    assert "invalid PID mode: nope" in str(caught.value)


def test_info_lists_drivers(client: docker.DockerClient) -> None:
    plugins = client.info()["Plugins"]
    assert plugins["Volume"] == ["local"]
    assert plugins["Network"] == ["bridge", "host", "null"]


def test_bind_missing_source_created(client: docker.DockerClient, tmp_path: Path) -> None:
    source = tmp_path / "a" / "b"
    output = client.containers.run(
        "busybox", ["ls", "-ld", "/data"], volumes={str(source): {"bind": "/data"}}, remove=True
    )
    assert source.is_dir()
    assert output.startswith(b"d")
