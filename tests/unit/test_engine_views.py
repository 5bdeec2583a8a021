"""Docker-shaped views: inspect, list items, status text, version and timestamps."""

from __future__ import annotations

from pathlib import Path

from ketch.engine import timestamps, views
from ketch.engine.options import parse_create_body
from ketch.engine.store import Container, ContainerPaths, ContainerState

CONTAINER_ID = "c" * 64


def make_container(**state: object) -> Container:
    options = parse_create_body({"Image": "busybox", "HostConfig": {"NetworkMode": "none"}})
    return Container(
        id=CONTAINER_ID,
        name="/web",
        created="2026-01-02T03:04:05.123456789Z",
        image_id="sha256:" + "a" * 64,
        config={
            "Image": "busybox",
            "Entrypoint": None,
            "Cmd": ["sh", "-c", "exit 3"],
            "Labels": {"a": "b"},
        },
        host_config=views.host_config_view(options),
        rootfs="/merged",
        state=ContainerState(**state),  # type: ignore[arg-type]
    )


def test_inspect_path_and_args() -> None:
    inspected = views.inspect_container(make_container(), ContainerPaths(Path("/data")))
    assert inspected["Path"] == "sh"
    assert inspected["Args"] == ["-c", "exit 3"]


def test_inspect_fields() -> None:
    inspected = views.inspect_container(make_container(), ContainerPaths(Path("/data")))
    assert inspected["Name"] == "/web"
    assert inspected["Driver"] == "overlay2"
    assert inspected["Mounts"] == []
    assert inspected["LogPath"] == f"/data/containers/{CONTAINER_ID}/{CONTAINER_ID}-json.log"
    assert inspected["HostConfig"]["NetworkMode"] == "none"
    assert list(inspected["NetworkSettings"]["Networks"]) == ["none"]


def test_inspect_state_keys() -> None:
    state = views.inspect_container(make_container(), ContainerPaths(Path("/d")))["State"]
    assert sorted(state) == sorted(
        [
            "Status", "Running", "Paused", "Restarting", "OOMKilled", "Dead", "Pid",
            "ExitCode", "Error", "StartedAt", "FinishedAt",
        ]
    )  # fmt: skip


def test_inspect_never_started_times() -> None:
    state = views.inspect_container(make_container(), ContainerPaths(Path("/d")))["State"]
    assert state["StartedAt"] == "0001-01-01T00:00:00Z"


def test_summary_fields() -> None:
    summary = views.container_summary(make_container())
    assert summary["Names"] == ["/web"]
    assert summary["Command"] == "sh -c exit 3"
    assert summary["Created"] == 1767323045
    assert summary["State"] == "created"
    assert summary["Status"] == "Created"
    assert summary["Labels"] == {"a": "b"}


def test_status_up() -> None:
    started = timestamps.to_epoch("2026-01-02T03:04:05Z")
    assert started is not None
    container = make_container(status="running", started_at="2026-01-02T03:04:05Z")
    assert views.status_text(container, now=started + 3.5) == "Up 3 seconds"


def test_status_exited() -> None:
    finished = timestamps.to_epoch("2026-01-02T03:04:05Z")
    assert finished is not None
    container = make_container(status="exited", exit_code=3, finished_at="2026-01-02T03:04:05Z")
    assert views.status_text(container, now=finished + 7200) == "Exited (3) 2 hours ago"


def test_status_removing() -> None:
    assert views.status_text(make_container(removing=True)) == "Removal In Progress"


def test_human_duration_table() -> None:
    cases = {
        0.5: "Less than a second",
        1: "1 second",
        59: "59 seconds",
        90: "About a minute",
        600: "10 minutes",
        3600: "About an hour",
        5 * 3600: "5 hours",
        3 * 86400: "3 days",
        21 * 86400: "3 weeks",
        90 * 86400: "3 months",
        800 * 86400: "2 years",
    }
    for seconds, text in cases.items():
        assert timestamps.human_duration(seconds) == text, seconds


def test_timestamp_round_trip() -> None:
    text = timestamps.format_ns(1_767_323_045_123_456_789)
    assert text == "2026-01-02T03:04:05.123456789Z"
    assert timestamps.to_epoch(text) == 1767323045.1234567


def test_timestamp_with_offset() -> None:
    assert timestamps.to_epoch("2026-01-02T05:04:05+02:00") == 1767323045


def test_timestamp_zero_is_none() -> None:
    assert timestamps.to_epoch(timestamps.ZERO_TIME) is None


def test_version_fields() -> None:
    version = views.version_view()
    assert version["ApiVersion"] == "1.45"
    assert version["MinAPIVersion"] == "1.24"
    assert version["Os"] == "linux"
    assert version["Components"][0]["Name"] == "Engine"


def test_registry_config_mirrors() -> None:
    config = views.registry_config(["http://127.0.0.1:5000"], ["r:5000"])
    assert config["Mirrors"] == ["http://127.0.0.1:5000"]
    assert config["IndexConfigs"]["docker.io"]["Mirrors"] == ["http://127.0.0.1:5000"]
    assert config["IndexConfigs"]["r:5000"]["Secure"] is False


def test_info_plugins(tmp_path: Path) -> None:
    info = views.info_view(
        engine_id="E",
        containers=[],
        image_count=0,
        data_root=tmp_path,
        debug=False,
        mirrors=[],
        insecure_registries=[],
        warnings=[],
    )
    assert info["Plugins"]["Volume"] == ["local"]
    assert info["Plugins"]["Network"] == ["bridge", "host", "null"]


def test_mount_points_source_removed_later(tmp_path: Path) -> None:
    # The Mounts source existed at create. Inspect and ps still show the mount after the
    # host directory is removed, because only the create checks the source.
    source = tmp_path / "gone"
    host_config = {"Mounts": [{"Type": "bind", "Source": str(source), "Target": "/data"}]}
    points = views.mount_points(host_config)
    assert [point["Source"] for point in points] == [str(source)]
