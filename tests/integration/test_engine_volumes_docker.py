"""Volumes through the real docker CLI against a real ketchd: named and anonymous
volumes, copy-up of image content, --volumes-from, removal, prune, and the local
driver's tmpfs and bind types.

One ketchd per module (see support.daemon). Each test names its containers and volumes
and removes them; every test checks that no volume mount is left behind.
"""

from __future__ import annotations

import json
import platform
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.daemon import KetchDaemon, docker_ok
from support.images import Dir, File, Symlink, gzip_layer, image_config, push_test_image
from support.netns import entered
from support.restart import restart_ketchd

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


@pytest.fixture(autouse=True)
def no_mount_left(daemon: KetchDaemon) -> Iterator[None]:
    yield
    assert volume_mounts(daemon) == []


@pytest.fixture(scope="module")
def seeded_image(daemon: KetchDaemon) -> str:
    """Push an image with VOLUME /seed, owned by 1000:1000 with mode 0750, holding a file
    and a symlink to /etc."""
    layer = gzip_layer({
        "bin/": Dir(),
        "bin/busybox": File(Path("/bin/busybox").read_bytes(), mode=0o755),
        "bin/sh": Symlink("busybox"),
        "bin/cat": Symlink("busybox"),
        "bin/ls": Symlink("busybox"),
        "bin/true": Symlink("busybox"),
        "seed/": Dir(mode=0o750, uid=1000, gid=1000),
        "seed/greeting": File(b"hello from the image\n", mode=0o640, uid=1000, gid=1000),
        "seed/etc-link": Symlink("/etc"),
    })  # fmt: skip
    architecture = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    config = json.loads(image_config([layer], architecture=architecture))
    config["config"]["Volumes"] = {"/seed": {}}
    with entered(daemon.namespace):
        push_test_image(
            daemon.registry_address, "test/seeded", "latest", [layer], json.dumps(config).encode()
        )
    reference = f"{daemon.registry_address}/test/seeded"
    docker_ok(daemon, "pull", reference)
    return reference


def volume_mounts(daemon: KetchDaemon) -> list[str]:
    prefix = str(daemon.data_root / "volumes") + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]


def volume_names(daemon: KetchDaemon) -> set[str]:
    return set(docker_ok(daemon, "volume", "ls", "-q").split())


def data_path(daemon: KetchDaemon, name: str) -> Path:
    return daemon.data_root / "volumes" / name / "_data"


# Named volumes


def test_named_volume_keeps_data(daemon: KetchDaemon) -> None:
    script = "echo one > /data/f"
    docker_ok(daemon, "run", "--rm", "-v", "keep1:/data", "busybox", "sh", "-c", script)
    output = docker_ok(daemon, "run", "--rm", "-v", "keep1:/data", "busybox", "cat", "/data/f")
    assert output == "one\n"
    assert "keep1" in volume_names(daemon)
    docker_ok(daemon, "volume", "rm", "keep1")


def test_volume_inspect_and_ls(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "volume", "create", "--label", "team=a", "-o", "type=tmpfs", "look1")
    try:
        inspected = json.loads(docker_ok(daemon, "volume", "inspect", "look1"))[0]
        assert inspected["Name"] == "look1"
        assert inspected["Driver"] == "local"
        assert inspected["Labels"] == {"team": "a"}
        assert inspected["Options"] == {"type": "tmpfs"}
        assert inspected["Mountpoint"] == str(data_path(daemon, "look1"))
        listed = docker_ok(daemon, "volume", "ls", "--filter", "label=team=a")
        assert listed.splitlines()[1].split() == ["local", "look1"]
    finally:
        docker_ok(daemon, "volume", "rm", "look1")


def test_volume_missing_is_not_found(daemon: KetchDaemon) -> None:
    result = daemon.docker("volume", "inspect", "nosuch1")
    assert result.returncode == 1
    assert "no such volume" in result.stderr


def test_inspect_shows_volume_mount(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "shown1", "-v", "shown1:/data:ro", "busybox", "true")
    try:
        template = "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}"
        output = docker_ok(daemon, "inspect", "-f", template, "shown1")
        assert output.strip() == "volume shown1 /data false"
    finally:
        docker_ok(daemon, "rm", "shown1")
        docker_ok(daemon, "volume", "rm", "shown1")


def test_ps_filter_by_volume(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "listed1", "-v", "listed1:/data", "busybox")
    docker_ok(daemon, "create", "--name", "listed2", "busybox")
    try:
        for value in ("listed1", "/data"):
            output = docker_ok(daemon, "ps", "-a", "--filter", f"volume={value}", "--format",
                               "{{.Names}}")  # fmt: skip
            assert output.split() == ["listed1"]
    finally:
        docker_ok(daemon, "rm", "listed1", "listed2")
    docker_ok(daemon, "volume", "rm", "listed1")


def test_volume_propagation_in_inspect(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "--name", "shared1", "-v", "prop1:/data:rshared", "busybox", "true")
    try:
        template = "{{range .Mounts}}{{.Propagation}} {{.Mode}}{{end}}"
        output = docker_ok(daemon, "inspect", "-f", template, "shared1")
        assert output.strip() == "rshared rshared"
    finally:
        docker_ok(daemon, "rm", "-v", "shared1")
    docker_ok(daemon, "volume", "rm", "prop1")


def test_read_only_volume_rejects_writes(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "-v", "ro1:/data:ro", "busybox", "touch", "/data/x")
    assert result.returncode == 1
    assert "Read-only file system" in result.stderr
    docker_ok(daemon, "volume", "rm", "ro1")


def test_mount_flag_makes_labelled_volume(daemon: KetchDaemon) -> None:
    mount = "type=volume,src=mounted1,dst=/m,volume-label=made=by-mount"
    docker_ok(daemon, "run", "--rm", "--mount", mount, "busybox", "touch", "/m/x")
    labels = docker_ok(daemon, "volume", "inspect", "-f", "{{json .Labels}}", "mounted1")
    assert json.loads(labels) == {"made": "by-mount"}
    assert (data_path(daemon, "mounted1") / "x").exists()
    docker_ok(daemon, "volume", "rm", "mounted1")


def test_create_and_rm_send_events(daemon: KetchDaemon) -> None:
    since = str(int(time.time()) - 1)
    docker_ok(daemon, "volume", "create", "evented1")
    docker_ok(daemon, "volume", "rm", "evented1")
    until = str(int(time.time()) + 1)
    output = docker_ok(daemon, "events", "--since", since, "--until", until, "--filter",
                       "type=volume", "--format", "{{.Action}} {{.Actor.ID}}")  # fmt: skip
    # Other tests' volumes may have events in the same second.
    events = [line for line in output.splitlines() if line.endswith(" evented1")]
    assert events == ["create evented1", "destroy evented1"]


# Removal


def test_rm_in_use_is_conflict(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "--name", "user1", "-v", "busy1:/data", "busybox", "sh", "-c",
              "echo kept > /data/f")  # fmt: skip
    container_id = docker_ok(daemon, "inspect", "-f", "{{.Id}}", "user1").strip()
    try:
        result = daemon.docker("volume", "rm", "busy1")
        assert result.returncode == 1
        assert f"remove busy1: volume is in use - [{container_id}]" in result.stderr
        assert (data_path(daemon, "busy1") / "f").read_text() == "kept\n"
    finally:
        docker_ok(daemon, "rm", "user1")
    docker_ok(daemon, "volume", "rm", "busy1")


def test_rm_v_drops_anonymous_only(daemon: KetchDaemon) -> None:
    before = volume_names(daemon)
    docker_ok(daemon, "create", "--name", "anon1", "-v", "/anon", "-v", "named1:/n", "busybox")
    anonymous = docker_ok(
        daemon, "inspect", "-f", '{{range .Mounts}}{{if eq .Destination "/anon"}}{{.Name}}'
        "{{end}}{{end}}", "anon1"
    ).strip()  # fmt: skip
    assert len(anonymous) == 64
    docker_ok(daemon, "rm", "-v", "anon1")
    assert volume_names(daemon) - before == {"named1"}
    docker_ok(daemon, "volume", "rm", "named1")


def test_rm_without_v_keeps_anonymous(daemon: KetchDaemon) -> None:
    before = volume_names(daemon)
    docker_ok(daemon, "create", "--name", "anon2", "-v", "/anon", "busybox")
    volumes = docker_ok(daemon, "inspect", "-f", "{{json .Config.Volumes}}", "anon2")
    assert json.loads(volumes) == {"/anon": {}}
    docker_ok(daemon, "rm", "anon2")
    left = volume_names(daemon) - before
    assert len(left) == 1
    docker_ok(daemon, "volume", "rm", *left)


def test_run_rm_drops_anonymous(daemon: KetchDaemon) -> None:
    before = volume_names(daemon)
    docker_ok(daemon, "run", "--rm", "-v", "/anon", "busybox", "touch", "/anon/x")
    assert volume_names(daemon) == before


def test_prune_default_and_all(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "volume", "create", "prune-named")
    docker_ok(daemon, "create", "--name", "anon3", "-v", "/anon", "busybox")
    docker_ok(daemon, "rm", "anon3")
    before = volume_names(daemon)
    docker_ok(daemon, "volume", "prune", "-f")
    after = volume_names(daemon)
    assert len(before - after) == 1
    assert "prune-named" in after
    docker_ok(daemon, "volume", "prune", "-af", "--filter", "label!=keep")
    assert "prune-named" not in volume_names(daemon)


# Copy-up of image content


def test_anonymous_volume_gets_image_content(daemon: KetchDaemon, seeded_image: str) -> None:
    output = docker_ok(daemon, "run", "--rm", seeded_image, "cat", "/seed/greeting")
    assert output == "hello from the image\n"


def test_copy_up_keeps_owner_mode_links(daemon: KetchDaemon, seeded_image: str) -> None:
    docker_ok(daemon, "run", "--rm", "-v", "seeded1:/seed", seeded_image, "true")
    data = data_path(daemon, "seeded1")
    try:
        directory = data.stat()
        assert (directory.st_uid, directory.st_gid) == (1000, 1000)
        assert stat.S_IMODE(directory.st_mode) == 0o750
        greeting = (data / "greeting").stat()
        assert stat.S_IMODE(greeting.st_mode) == 0o640
        assert greeting.st_uid == 1000
        assert (data / "etc-link").readlink() == Path("/etc")
        assert (data / "etc-link").is_symlink()
    finally:
        docker_ok(daemon, "volume", "rm", "seeded1")


def test_copy_up_skips_non_empty_volume(daemon: KetchDaemon, seeded_image: str) -> None:
    docker_ok(daemon, "run", "--rm", "-v", "full1:/seed", "busybox", "touch", "/seed/mine")
    output = docker_ok(daemon, "run", "--rm", "-v", "full1:/seed", seeded_image, "ls", "/seed")
    assert output.split() == ["mine"]
    docker_ok(daemon, "volume", "rm", "full1")


def test_nocopy_skips_image_content(daemon: KetchDaemon, seeded_image: str) -> None:
    output = docker_ok(daemon, "run", "--rm", "-v", "empty1:/seed:nocopy", seeded_image, "ls",
                       "-A", "/seed")  # fmt: skip
    assert output == ""
    docker_ok(daemon, "volume", "rm", "empty1")


# --volumes-from


def test_volumes_from_shares_volume_and_bind(daemon: KetchDaemon, tmp_path: Path) -> None:
    (tmp_path / "hostfile").write_text("from the host\n")
    docker_ok(daemon, "create", "--name", "source1", "-v", "shared1:/shared", "-v",
              f"{tmp_path}:/hostdir", "busybox")  # fmt: skip
    try:
        script = "echo shared > /shared/f && cat /hostdir/hostfile"
        output = docker_ok(daemon, "run", "--rm", "--volumes-from", "source1", "busybox", "sh",
                           "-c", script)  # fmt: skip
        assert output == "from the host\n"
        assert (data_path(daemon, "shared1") / "f").read_text() == "shared\n"
        result = daemon.docker("run", "--rm", "--volumes-from", "source1:ro", "busybox", "touch",
                               "/shared/g")  # fmt: skip
        assert result.returncode == 1
    finally:
        docker_ok(daemon, "rm", "source1")
    docker_ok(daemon, "volume", "rm", "shared1")


def test_volumes_from_same_destination(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "source2", "-v", "first2:/data", "busybox")
    docker_ok(daemon, "create", "--name", "source3", "-v", "second2:/data", "busybox")
    (data_path(daemon, "first2") / "f").write_text("first\n")
    (data_path(daemon, "second2") / "f").write_text("second\n")
    try:
        docker_ok(daemon, "create", "--name", "user2", "--volumes-from", "source2",
                  "--volumes-from", "source3", "busybox", "cat", "/data/f")  # fmt: skip
        mounts = json.loads(docker_ok(daemon, "inspect", "user2"))[0]["Mounts"]
        assert [(mount["Name"], mount["Destination"]) for mount in mounts] == [("second2", "/data")]
        assert docker_ok(daemon, "start", "-a", "user2") == "second\n"
    finally:
        docker_ok(daemon, "rm", "-f", "user2", "source2", "source3")
    docker_ok(daemon, "volume", "rm", "first2", "second2")


def test_duplicate_mount_point_rejected(daemon: KetchDaemon) -> None:
    before = volume_names(daemon)
    result = daemon.docker("create", "--name", "dup1", "-v", "dupa1:/data", "-v", "dupb1:/data",
                           "busybox")  # fmt: skip
    assert result.returncode == 1
    assert "Duplicate mount point: /data" in result.stderr
    assert volume_names(daemon) == before
    assert daemon.docker("inspect", "dup1").returncode == 1


def test_volumes_from_unknown_container(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "--volumes-from", "nosuch2", "busybox", "true")
    assert result.returncode == 125
    assert "No such container: nosuch2" in result.stderr


# Driver types


def test_tmpfs_volume_mounted_while_used(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "volume", "create", "-o", "type=tmpfs", "-o", "o=size=1m", "fast1")
    docker_ok(daemon, "create", "--name", "fast1", "-v", "fast1:/fast", "busybox")
    try:
        assert volume_mounts(daemon) == [str(data_path(daemon, "fast1"))]
        output = docker_ok(daemon, "start", "-a", "fast1")
        assert output == ""
        mounts = docker_ok(daemon, "run", "--rm", "-v", "fast1:/fast", "busybox", "grep", "/fast",
                           "/proc/mounts")  # fmt: skip
        assert mounts.split()[2] == "tmpfs"
        assert "size=1024k" in mounts
    finally:
        docker_ok(daemon, "rm", "fast1")
    assert volume_mounts(daemon) == []
    docker_ok(daemon, "volume", "rm", "fast1")


def test_tmpfs_volume_mounted_again_at_start(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "volume", "create", "-o", "type=tmpfs", "again1")
    docker_ok(daemon, "create", "--name", "again1", "-v", "again1:/fast", "busybox", "grep",
              "/fast", "/proc/mounts")  # fmt: skip
    try:
        # As after a reboot of the host: the record is there, the tmpfs is not.
        subprocess.run(["umount", str(data_path(daemon, "again1"))], check=True)
        output = docker_ok(daemon, "start", "-a", "again1")
        assert output.split()[2] == "tmpfs"
    finally:
        docker_ok(daemon, "rm", "again1")
    docker_ok(daemon, "volume", "rm", "again1")


def test_bind_volume_writes_host_directory(daemon: KetchDaemon, tmp_path: Path) -> None:
    docker_ok(daemon, "volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
              f"device={tmp_path}", "hostbound1")  # fmt: skip
    docker_ok(daemon, "run", "--rm", "-v", "hostbound1:/out", "busybox", "sh", "-c",
              "echo written > /out/f")  # fmt: skip
    assert (tmp_path / "f").read_text() == "written\n"
    docker_ok(daemon, "volume", "rm", "hostbound1")
    assert (tmp_path / "f").exists()
    assert not (daemon.data_root / "volumes" / "hostbound1").exists()


# Bad input


def test_bad_name_leaves_nothing(daemon: KetchDaemon) -> None:
    result = daemon.docker("volume", "create", "bad!name")
    assert result.returncode == 1
    assert "invalid volume name 'bad!name'" in result.stderr
    assert not (daemon.data_root / "volumes" / "bad!name").exists()


def test_bad_option_leaves_nothing(daemon: KetchDaemon) -> None:
    result = daemon.docker("volume", "create", "-o", "type=nfs", "badopt1")
    assert result.returncode == 1
    assert "type=nfs" in result.stderr
    assert "badopt1" not in volume_names(daemon)
    assert not (daemon.data_root / "volumes" / "badopt1").exists()


def test_bad_volume_in_run_leaves_nothing(daemon: KetchDaemon) -> None:
    before = volume_names(daemon)
    result = daemon.docker("run", "--rm", "-v", "/anon", "-v", "x!:/data", "busybox", "true")
    assert result.returncode == 125
    assert "invalid volume name 'x!'" in result.stderr
    assert volume_names(daemon) == before


def test_failed_create_removes_new_volumes(daemon: KetchDaemon) -> None:
    before = volume_names(daemon)
    mount = "type=volume,src=badtype1,dst=/b,volume-opt=type=nfs"
    result = daemon.docker("create", "--name", "failed1", "-v", "fresh1:/a", "-v", "/anon",
                           "--mount", mount, "busybox")  # fmt: skip
    assert result.returncode == 1
    assert "type=nfs" in result.stderr
    assert volume_names(daemon) == before
    assert not (daemon.data_root / "volumes" / "fresh1").exists()
    assert daemon.docker("inspect", "failed1").returncode == 1


def test_existing_volume_other_driver_conflict(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "volume", "create", "driven1")
    try:
        mount = "type=volume,src=driven1,dst=/data,volume-driver=other"
        result = daemon.docker("create", "--name", "driven2", "--mount", mount, "busybox")
        assert result.returncode == 1
        assert "driver 'local' already has volume 'driven1'" in result.stderr
        assert "volume name must be unique" in result.stderr
        assert daemon.docker("inspect", "driven2").returncode == 1
    finally:
        docker_ok(daemon, "volume", "rm", "driven1")


def test_failed_mount_unmounts_others(daemon: KetchDaemon, tmp_path: Path) -> None:
    device = tmp_path / "gone"
    device.mkdir()
    docker_ok(daemon, "volume", "create", "-o", "type=tmpfs", "first1")
    docker_ok(daemon, "volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
              f"device={device}", "second1")  # fmt: skip
    device.rmdir()
    try:
        result = daemon.docker("create", "--name", "failed2", "-v", "first1:/a", "-v",
                               "second1:/b", "busybox")  # fmt: skip
        assert result.returncode == 1
        assert "cannot mount volume second1" in result.stderr
        assert volume_mounts(daemon) == []
    finally:
        docker_ok(daemon, "volume", "rm", "first1", "second1")


# Others


def test_read_only_rootfs_with_tmpfs(daemon: KetchDaemon) -> None:
    script = "touch /scratch/x && ! touch /x 2>/dev/null"
    docker_ok(daemon, "run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "sh", "-c",
              script)  # fmt: skip


def test_system_df_counts_volumes(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "--rm", "-v", "counted1:/data", "busybox", "sh", "-c",
              "head -c 5000 /dev/zero > /data/f")  # fmt: skip
    try:
        output = docker_ok(daemon, "system", "df", "-v")
        line = next(line for line in output.splitlines() if line.startswith("counted1"))
        assert line.split()[1:] == ["0", "5kB"]
    finally:
        docker_ok(daemon, "volume", "rm", "counted1")


def test_volumes_survive_ketchd_sigkill(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "volume", "create", "-o", "type=tmpfs", "restored1")
    docker_ok(daemon, "run", "-d", "--name", "restored1", "-v", "restored1:/fast", "busybox",
              "sh", "-c", "echo kept > /fast/f && sleep 600")  # fmt: skip
    try:
        restart_ketchd(daemon)
        assert "restored1" in volume_names(daemon)
        template = "{{range .Mounts}}{{.Name}}{{end}}"
        assert docker_ok(daemon, "inspect", "-f", template, "restored1").strip() == "restored1"
        assert (data_path(daemon, "restored1") / "f").read_text() == "kept\n"
        busy = daemon.docker("volume", "rm", "restored1")
        assert "volume is in use" in busy.stderr
    finally:
        docker_ok(daemon, "rm", "-f", "restored1")
    docker_ok(daemon, "volume", "rm", "restored1")
