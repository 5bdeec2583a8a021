"""The local volume driver's records, names, options, filters, removal and prune, on a
data root in a temporary directory (no mounts: tmpfs and bind volumes are only created)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from ketch.engine.volume_mounts import (
    ContainerVolumes,
    parse_volume_bind,
    parse_volume_mount,
    volume_point,
)
from ketch.engine.volumes import ANONYMOUS_LABEL, VolumeService
from ketch.errors import Conflict, InvalidArgument, NotFound, SystemFailure


@pytest.fixture
def service(tmp_path: Path) -> VolumeService:
    db = sqlite3.connect(tmp_path / "ketch.db", isolation_level=None)
    return VolumeService(tmp_path / "data", db)


def use(service: VolumeService, container_id: str, name: str) -> None:
    point = {"Type": "volume", "Name": name, "Destination": "/data", "RW": True}
    service.store.add_mount_points(container_id, [point])


def test_create_makes_data_directory(service: VolumeService) -> None:
    volume = service.create("data1")
    assert service.data_path("data1").is_dir()
    assert volume.driver == "local"


def test_create_same_name_returns_existing(service: VolumeService) -> None:
    first = service.create("data1", labels={"a": "1"})
    second = service.create("data1", labels={"b": "2"})
    assert second is first


def test_create_without_name_is_random_hex(service: VolumeService) -> None:
    volume = service.create()
    assert len(volume.name) == 64
    assert int(volume.name, 16) >= 0


def test_create_anonymous_gets_label(service: VolumeService) -> None:
    volume = service.create(anonymous=True)
    assert volume.labels == {ANONYMOUS_LABEL: ""}


@pytest.mark.parametrize("name", ["a", "bad!", "-x", "has/slash", "../up"])
def test_create_bad_name_leaves_nothing(service: VolumeService, name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid volume name"):
        service.create(name)
    assert service.store.all() == []
    assert not (service.root / name).exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "nfs"}, "type=nfs"),
        ({"size": "1g"}, "'size'"),
        ({"o": "size=1m"}, "need a type"),
        ({"type": "tmpfs", "o": "size=lots"}, "size=lots"),
        ({"type": "tmpfs", "o": "exec=1"}, "exec=1"),
        ({"type": "none", "device": "/tmp"}, "o=bind"),
        ({"type": "none", "o": "bind", "device": "relative"}, "absolute path"),
        ({"type": "none", "o": "bind", "device": "/no/such/dir"}, "no such directory"),
    ],
)
def test_create_bad_option_leaves_nothing(
    service: VolumeService, options: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        service.create("data1", options=options)
    assert service.store.get("data1") is None
    assert not (service.root / "data1").exists()


def test_create_other_driver_rejected(service: VolumeService) -> None:
    with pytest.raises(InvalidArgument, match="driver 'nfs'"):
        service.create("data1", driver="nfs")


def test_create_tmpfs_and_bind_options_accepted(service: VolumeService, tmp_path: Path) -> None:
    service.create("fast", options={"type": "tmpfs", "o": "size=64m,mode=1777,noexec"})
    service.create("host", options={"type": "none", "o": "bind", "device": str(tmp_path)})
    assert [volume.name for volume in service.store.all()] == ["fast", "host"]


def test_records_survive_reopen(service: VolumeService, tmp_path: Path) -> None:
    service.create("data1", options={"type": "tmpfs"}, labels={"team": "a"})
    use(service, "c1", "data1")
    reopened = VolumeService(tmp_path / "data", sqlite3.connect(tmp_path / "ketch.db"))
    volume = reopened.get("data1")
    assert volume.labels == {"team": "a"}
    assert volume.options == {"type": "tmpfs"}
    assert reopened.users("data1") == ["c1"]


def test_inspect_view_fields(service: VolumeService) -> None:
    view = service.view(service.create("data1"))
    assert view["Mountpoint"] == str(service.data_path("data1"))
    assert view["Scope"] == "local"
    assert view["Options"] is None
    assert "UsageData" not in view


def test_inspect_usage_counts_bytes_and_users(service: VolumeService) -> None:
    volume = service.create("data1")
    (service.data_path("data1") / "file").write_bytes(b"x" * 1000)
    use(service, "c1", "data1")
    usage = service.view(volume, usage=True)["UsageData"]
    assert usage == {"Size": 1000, "RefCount": 1}


def test_get_missing_is_docker_message(service: VolumeService) -> None:
    with pytest.raises(NotFound, match="^get nope: no such volume$"):
        service.get("nope")


def test_list_filters(service: VolumeService) -> None:
    service.create("web-data", labels={"app": "web"})
    service.create("db-data", labels={"app": "db", "tier": "back"})
    use(service, "c1", "db-data")

    def names(filters: dict[str, list[str]]) -> list[str]:
        return [volume["Name"] for volume in service.list(filters)]

    assert names({"name": ["web"]}) == ["web-data"]
    assert names({"label": ["app=db"]}) == ["db-data"]
    assert names({"label": ["tier"]}) == ["db-data"]
    assert names({"dangling": ["true"]}) == ["web-data"]
    assert names({"dangling": ["false"]}) == ["db-data"]
    assert names({"driver": ["local"]}) == ["db-data", "web-data"]


def test_list_unknown_filter_rejected(service: VolumeService) -> None:
    with pytest.raises(InvalidArgument, match="'color'"):
        service.list({"color": ["red"]})


def test_remove_in_use_is_conflict(service: VolumeService) -> None:
    service.create("data1")
    use(service, "c1", "data1")
    with pytest.raises(Conflict, match=r"^remove data1: volume is in use - \[c1\]$"):
        service.remove("data1")
    assert service.data_path("data1").is_dir()


def test_remove_ignores_removed_container(service: VolumeService) -> None:
    service.create("data1")
    use(service, "gone", "data1")
    service.container_exists = lambda container_id: False
    service.remove("data1")
    assert not (service.root / "data1").exists()


def test_remove_deletes_data(service: VolumeService) -> None:
    service.create("data1")
    (service.data_path("data1") / "file").write_text("x")
    service.remove("data1")
    assert not (service.root / "data1").exists()
    assert service.store.get("data1") is None


def test_remove_missing_with_force_passes(service: VolumeService) -> None:
    service.remove("nope", force=True)
    with pytest.raises(NotFound):
        service.remove("nope")


def test_remove_bind_volume_keeps_host_files(service: VolumeService, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("x")
    service.create("host", options={"type": "none", "o": "bind", "device": str(host)})
    service.remove("host")
    assert (host / "keep").exists()


def test_prune_takes_unused_anonymous_only(service: VolumeService) -> None:
    service.create("named")
    unused = service.create(anonymous=True)
    used = service.create(anonymous=True)
    use(service, "c1", used.name)
    report = service.prune()
    assert report["VolumesDeleted"] == [unused.name]
    assert service.store.get("named") is not None


def test_prune_all_takes_named(service: VolumeService) -> None:
    service.create("named")
    (service.data_path("named") / "file").write_bytes(b"x" * 10)
    report = service.prune({"all": ["true"]})
    assert report == {"VolumesDeleted": ["named"], "SpaceReclaimed": 10}


def test_prune_label_filters(service: VolumeService) -> None:
    service.create("keep", labels={"keep": "yes"})
    service.create("drop", labels={"tier": "tmp"})
    report = service.prune({"all": ["1"], "label!": ["keep"]})
    assert report["VolumesDeleted"] == ["drop"]
    report = service.prune({"all": ["1"], "label": ["tier=tmp"]})
    assert report["VolumesDeleted"] == []


def test_bind_spec_named_volume() -> None:
    mount = parse_volume_bind("data1:/data:ro,nocopy")
    assert mount is not None
    assert (mount["source"], mount["destination"]) == ("data1", "/data")
    assert mount["options"] == ["ro"]
    assert mount["nocopy"] is True


def test_bind_spec_propagation() -> None:
    mount = parse_volume_bind("data1:/data:rshared")
    assert mount is not None
    assert mount["options"] == ["rshared"]
    assert mount["mode"] == "rshared"


def test_bind_spec_anonymous() -> None:
    mount = parse_volume_bind("/data")
    assert mount is not None
    assert mount["source"] == ""


def test_bind_spec_host_path_is_not_volume() -> None:
    assert parse_volume_bind("/srv:/data:ro") is None


def test_bind_spec_anonymous_with_mode() -> None:
    with pytest.raises(InvalidArgument, match="invalid volume specification: '/data:ro'"):
        parse_volume_bind("/data:ro")


def test_bind_spec_relative_destination_is_host_bind() -> None:
    # Left to the host bind parser, whose message states that the destination must be absolute.
    assert parse_volume_bind("/tmp:relative") is None


@pytest.mark.parametrize(
    ("bind", "message"),
    [("x!:/data", "invalid volume name"), ("data1:rel", "not an absolute"), ("v1:/d:bad", "bad")],
)
def test_bind_spec_invalid(bind: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_volume_bind(bind)


def test_mount_spec_volume_options() -> None:
    mount = parse_volume_mount(
        {
            "Type": "volume",
            "Source": "data1",
            "Target": "/data",
            "ReadOnly": True,
            "VolumeOptions": {
                "NoCopy": True,
                "Labels": {"a": "b"},
                "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}},
            },
        },
        "HostConfig.Mounts[0]",
    )
    assert mount["nocopy"] is True
    assert mount["labels"] == {"a": "b"}
    assert mount["driver_options"] == {"type": "tmpfs"}
    assert mount["options"] == ["ro"]


def test_mount_spec_subpath_rejected() -> None:
    mount = {"Type": "volume", "Source": "v1", "Target": "/d", "VolumeOptions": {"Subpath": "x"}}
    with pytest.raises(InvalidArgument, match="Subpath"):
        parse_volume_mount(mount, "HostConfig.Mounts[0]")


def test_create_and_remove_publish_events(service: VolumeService) -> None:
    published: list[tuple[str, str, str, dict[str, str]]] = []

    class Recorder:
        def publish(self, kind: str, action: str, actor: str, attributes: dict) -> None:
            published.append((kind, action, actor, attributes))

    service.events = Recorder()
    service.create("data1")
    service.create("data1")
    service.remove("data1")
    assert published == [
        ("volume", "create", "data1", {"driver": "local"}),
        ("volume", "destroy", "data1", {"driver": "local"}),
    ]


def test_populate_copies_into_empty_volume(service: VolumeService, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "seed").mkdir(parents=True)
    (rootfs / "seed" / "file").write_text("image\n")
    (rootfs / "seed" / "link").symlink_to("/etc")
    (rootfs / "escape").symlink_to("/etc")
    volumes = ContainerVolumes(service)
    data = service.data_path(service.create("seeded").name)
    other = service.data_path(service.create("other").name)
    volumes._pending_copies["c1"] = [(rootfs, "/seed", data), (rootfs, "/escape", other)]

    asyncio.run(volumes.populate(SimpleNamespace(id="c1"), never_remove))

    assert (data / "file").read_text() == "image\n"
    assert (data / "link").readlink() == Path("/etc")
    # /escape resolves inside the rootfs, where there is no /etc to copy.
    assert list(other.iterdir()) == []


def test_populate_skips_non_empty_volume(service: VolumeService, tmp_path: Path) -> None:
    (tmp_path / "rootfs" / "seed").mkdir(parents=True)
    (tmp_path / "rootfs" / "seed" / "file").write_text("image\n")
    volumes = ContainerVolumes(service)
    data = service.data_path(service.create("full").name)
    (data / "mine").write_text("x")
    volumes._pending_copies["c1"] = [(tmp_path / "rootfs", "/seed", data)]
    asyncio.run(volumes.populate(SimpleNamespace(id="c1"), never_remove))
    assert sorted(path.name for path in data.iterdir()) == ["mine"]


def test_populate_failure_removes_container(service: VolumeService, tmp_path: Path) -> None:
    volumes = ContainerVolumes(service)
    data = service.data_path(service.create("target").name)
    volumes._pending_copies["c1"] = [(tmp_path / "missing", "/seed", data)]
    removed: list[tuple[str, bool]] = []

    async def remove(container: SimpleNamespace, anonymous: bool) -> None:
        removed.append((container.id, anonymous))

    with pytest.raises(SystemFailure, match="cannot open the rootfs"):
        asyncio.run(volumes.populate(SimpleNamespace(id="c1"), remove))
    assert removed == [("c1", True)]


async def never_remove(container: SimpleNamespace, anonymous: bool) -> None:
    raise AssertionError(f"container {container.id} removed")


def _attach_options(mounts: list[dict], host_config: dict) -> SimpleNamespace:
    """Return the fields of CreateOptions that ContainerVolumes.attach reads."""
    host = SimpleNamespace(mounts=mounts)
    return SimpleNamespace(host=host, raw_host_config=host_config, volumes={})


def test_attach_volumes_from_later_wins(service: VolumeService, tmp_path: Path) -> None:
    for container_id, name in (("source1", "first"), ("source2", "second")):
        volume = service.create(name)
        point = volume_point(volume, service.data_path(name), "/data", False, "")
        service.store.add_mount_points(container_id, [point])
    sources = {name: SimpleNamespace(id=name, host_config={}) for name in ("source1", "source2")}
    options = _attach_options([], {"VolumesFrom": ["source1", "source2"]})

    ContainerVolumes(service).attach("c1", options, {}, tmp_path, sources.__getitem__)

    assert [mount["destination"] for mount in options.host.mounts] == ["/data"]
    assert options.host.mounts[0]["source"] == str(service.data_path("second"))
    assert [point["Name"] for point in service.store.mount_points("c1")] == ["second"]


def test_attach_duplicate_destination_rejected(service: VolumeService, tmp_path: Path) -> None:
    mounts = [
        parse_volume_bind("one:/data"),
        parse_volume_bind("two:/data/"),
    ]
    options = _attach_options(mounts, {})

    with pytest.raises(InvalidArgument) as raised:
        ContainerVolumes(service).attach("c1", options, {}, tmp_path, lambda name: None)

    assert str(raised.value) == "Duplicate mount point: /data"
    assert service.store.get("one") is None
    assert service.store.get("two") is None
    assert service.store.mount_points("c1") == []


def test_attach_existing_volume_other_driver(service: VolumeService, tmp_path: Path) -> None:
    service.create("data1")
    mount = {"Type": "volume", "Source": "data1", "Target": "/data"}
    mount["VolumeOptions"] = {"DriverConfig": {"Name": "other"}}
    options = _attach_options([parse_volume_mount(mount, "HostConfig.Mounts[0]")], {})

    with pytest.raises(Conflict) as raised:
        ContainerVolumes(service).attach("c1", options, {}, tmp_path, lambda name: None)

    assert str(raised.value) == (
        "create data1: driver 'local' already has volume 'data1': volume name must be unique"
    )
    assert service.store.get("data1") is not None
    assert service.store.mount_points("c1") == []


def test_attach_existing_volume_same_driver(service: VolumeService, tmp_path: Path) -> None:
    service.create("data1")
    mount = {"Type": "volume", "Source": "data1", "Target": "/data"}
    mount["VolumeOptions"] = {"DriverConfig": {"Name": "local"}}
    options = _attach_options([parse_volume_mount(mount, "HostConfig.Mounts[0]")], {})

    ContainerVolumes(service).attach("c1", options, {}, tmp_path, lambda name: None)

    assert [point["Name"] for point in service.store.mount_points("c1")] == ["data1"]
