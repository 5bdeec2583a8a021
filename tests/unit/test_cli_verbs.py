"""CLI commands whose routes ketchd does not all serve yet, run in a subprocess against
a scripted Engine API server: the requests they send and what they print."""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_ketch
from support.fake_docker import FakeDocker, Hijack, Reply, serve_fake_docker

CONTAINER_ID = "c" * 64


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


@pytest.fixture
def directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ketch-cli-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake(directory: Path) -> Iterator[FakeDocker]:
    with serve_fake_docker(directory / "api.sock") as served:
        yield served


def ketch(fake: FakeDocker, *args: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return run_ketch(*args, host=fake.host, **kwargs)  # type: ignore[arg-type]


def inspected(tty: bool = False, running: bool = True) -> dict:
    return {
        "Id": CONTAINER_ID,
        "Name": "/web",
        "Config": {"Tty": tty, "OpenStdin": False, "Labels": {"tier": "front"}},
        "State": {"Status": "running" if running else "exited", "Running": running},
    }


def test_stop_prints_names_and_errors(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/stop", Reply(204))
    fake.reply("POST", "/containers/nope/stop", Reply(404, {"message": "No such container: nope"}))
    result = ketch(fake, "stop", "-t", "3", "web", "nope")
    assert result.returncode == 1
    assert result.stdout == "web\n"
    assert result.stderr == "Error response from daemon: No such container: nope\n"
    assert fake.find("POST", "/containers/web/stop")[0].query == {"t": ["3"]}


def test_kill_sends_signal(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/kill", Reply(204))
    result = ketch(fake, "kill", "-s", "HUP", "web")
    assert result.returncode == 0, result.stderr
    assert fake.find("POST", "/containers/web/kill")[0].query == {"signal": ["HUP"]}


@pytest.mark.parametrize("verb", ["restart", "pause", "unpause"])
def test_simple_verbs_post(fake: FakeDocker, verb: str) -> None:
    fake.reply("POST", f"/containers/web/{verb}", Reply(204))
    result = ketch(fake, verb, "web")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "web\n"


def test_wait_prints_status(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/wait", Reply(200, {"StatusCode": 3}))
    result = ketch(fake, "wait", "web")
    assert result.stdout == "3\n"


def test_rename_sends_new_name(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/rename", Reply(204))
    result = ketch(fake, "rename", "web", "api")
    assert result.returncode == 0, result.stderr
    assert fake.find("POST", "/containers/web/rename")[0].query == {"name": ["api"]}


def test_rename_needs_two_arguments(fake: FakeDocker) -> None:
    result = ketch(fake, "rename", "web")
    assert result.returncode == 125
    assert result.stderr.startswith('"ketch rename" requires exactly 2 arguments.')


def test_inspect_container_then_image(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/busybox/json", Reply(404, {"message": "No such container"}))
    fake.reply("GET", "/images/busybox/json", Reply(200, {"Id": "sha256:abc"}))
    result = ketch(fake, "inspect", "-f", "{{.Id}}", "busybox")
    assert result.stdout == "sha256:abc\n"


def test_inspect_missing_object(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected()))
    result = ketch(fake, "inspect", "--type", "container", "web", "nope")
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["Id"] == CONTAINER_ID
    assert result.stderr == "Error: No such container: nope\n"


def test_inspect_format_nested_and_index(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected()))
    template = '{{.State.Status}} {{index .Config.Labels "tier"}} {{json .Config.Labels}}'
    result = ketch(fake, "inspect", "--format", template, "web")
    assert result.stdout == 'running front {"tier":"front"}\n'


def test_logs_query_and_frames(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected()))
    body = frame(1, b"out\n") + frame(2, b"err\n")
    fake.reply("GET", "/containers/web/logs", Reply(200, raw=body))
    result = ketch(fake, "logs", "-t", "--tail", "5", "--since", "1700000000", "web")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    query = fake.find("GET", "/containers/web/logs")[0].query
    assert query["tail"] == ["5"]
    assert query["timestamps"] == ["1"]
    assert query["since"] == ["1700000000"]


def test_logs_tty_is_raw(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected(tty=True)))
    fake.reply("GET", "/containers/web/logs", Reply(200, raw=b"plain, no frames\n"))
    assert ketch(fake, "logs", "web").stdout == "plain, no frames\n"


def test_logs_bad_since_exits_125(fake: FakeDocker) -> None:
    result = ketch(fake, "logs", "--since", "yesterday-ish", "web")
    assert result.returncode == 125
    assert 'invalid value for "--since"' in result.stderr
    assert fake.requests == []


def test_create_prints_id(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/create", Reply(201, {"Id": CONTAINER_ID, "Warnings": []}))
    result = ketch(fake, "create", "--name", "web", "-t", "busybox", "sh")
    assert result.stdout == CONTAINER_ID + "\n"
    body = fake.find("POST", "/containers/create")[0].json()
    assert body["Tty"] is True
    assert body["Cmd"] == ["sh"]


def test_start_attached_exit_status(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected(running=False)))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/attach", Hijack(frame(1, b"hi\n")))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/wait", Reply(200, {"StatusCode": 4}))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/start", Reply(204))
    result = ketch(fake, "start", "-a", "web")
    assert result.returncode == 4, result.stderr
    assert result.stdout == "hi\n"


def test_exec_body_and_exit_code(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/exec", Reply(201, {"Id": "e1"}))
    fake.reply("POST", "/exec/e1/start", Hijack(frame(1, b"x\n") + frame(2, b"y\n")))
    fake.reply("GET", "/exec/e1/json", Reply(200, {"ExitCode": 7, "Running": False}))
    result = ketch(fake, "exec", "-e", "A=1", "-w", "/tmp", "-u", "1000", "web", "ls", "-l")
    assert result.returncode == 7
    assert result.stdout == "x\n"
    assert result.stderr == "y\n"
    body = fake.find("POST", "/containers/web/exec")[0].json()
    assert body["Cmd"] == ["ls", "-l"]
    assert body["Env"] == ["A=1"]
    assert body["WorkingDir"] == "/tmp"
    assert body["User"] == "1000"
    assert body["AttachStdin"] is False


def test_exec_detached(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/exec", Reply(201, {"Id": "e1"}))
    fake.reply("POST", "/exec/e1/start", Reply(200))
    result = ketch(fake, "exec", "-d", "web", "sleep", "5")
    assert result.returncode == 0, result.stderr
    assert fake.find("POST", "/exec/e1/start")[0].json() == {"Detach": True, "Tty": False}


def test_exec_stdin_reaches_container(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/exec", Reply(201, {"Id": "e1"}))
    fake.reply("POST", "/exec/e1/start", Hijack(b""))
    fake.reply("GET", "/exec/e1/json", Reply(200, {"ExitCode": 0}))
    result = ketch(fake, "exec", "-i", "web", "cat", input="data")
    assert result.returncode == 0, result.stderr
    assert fake.find("POST", "/containers/web/exec")[0].json()["AttachStdin"] is True


def test_top_table(fake: FakeDocker) -> None:
    processes = {"Titles": ["PID", "CMD"], "Processes": [["1", "sleep 100"]]}
    fake.reply("GET", "/containers/web/top", Reply(200, processes))
    result = ketch(fake, "top", "web", "-ef")
    assert result.stdout.splitlines() == ["PID       CMD", "1         sleep 100"]
    assert fake.find("GET", "/containers/web/top")[0].query == {"ps_args": ["-ef"]}


def test_stats_no_stream(fake: FakeDocker) -> None:
    sample = {
        "id": CONTAINER_ID,
        "name": "/web",
        "cpu_stats": {
            "cpu_usage": {"total_usage": 300},
            "system_cpu_usage": 2000,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
        "memory_stats": {
            "usage": 2 * 1048576,
            "limit": 8 * 1048576,
            "stats": {"inactive_file": 1048576},
        },
        "pids_stats": {"current": 3},
    }
    fake.reply("GET", "/containers/web/stats", Reply(200, sample))
    result = ketch(
        fake,
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.MemPerc}} {{.PIDs}}",
        "web",
    )
    assert result.stdout == "web 40.00% 1MiB / 8MiB 12.50% 3\n"


def test_update_body(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/web/update", Reply(200, {"Warnings": []}))
    result = ketch(fake, "update", "-m", "64m", "--cpus", "1.5", "--restart", "on-failure:3", "web")
    assert result.stdout == "web\n"
    body = fake.find("POST", "/containers/web/update")[0].json()
    assert body["Memory"] == 64 * 1048576
    assert body["NanoCpus"] == 1_500_000_000
    assert body["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_update_without_flags_exits_125(fake: FakeDocker) -> None:
    result = ketch(fake, "update", "web")
    assert result.returncode == 125
    assert fake.requests == []


def test_events_default_line(fake: FakeDocker) -> None:
    event = {
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": CONTAINER_ID, "Attributes": {"name": "web", "image": "busybox"}},
        "time": 1700000000,
        "timeNano": 1700000000123456789,
    }
    fake.reply("GET", "/events", Reply(200, lines=[event]))
    result = ketch(fake, "events", "--until", "1700000001", env={"TZ": "UTC"})
    assert result.stdout == (
        f"2023-11-14T22:13:20.123456789Z container start {CONTAINER_ID} (image=busybox, name=web)\n"
    )


def test_events_format_and_filters(fake: FakeDocker) -> None:
    fake.reply("GET", "/events", Reply(200, lines=[{"Type": "container", "Action": "die"}]))
    result = ketch(fake, "events", "-f", "type=container", "--format", "{{.Action}}")
    assert result.stdout == "die\n"
    query = fake.find("GET", "/events")[0].query
    assert json.loads(query["filters"][0]) == {"type": ["container"]}


def test_info_format(fake: FakeDocker) -> None:
    fake.reply("GET", "/info", Reply(200, {"Containers": 2, "ServerVersion": "0.1"}))
    result = ketch(fake, "info", "--format", "{{.Containers}} {{.ServerVersion}}")
    assert result.stdout == "2 0.1\n"


def test_version_format_json(fake: FakeDocker) -> None:
    fake.reply("GET", "/version", Reply(200, {"Version": "9.9", "ApiVersion": "1.45"}))
    result = ketch(fake, "version", "--format", "{{.Server.Version}} {{.Client.ApiVersion}}")
    assert result.stdout == "9.9 1.41\n"


def test_rmi_prints_untagged_and_deleted(fake: FakeDocker) -> None:
    removed = [{"Untagged": "busybox:latest"}, {"Deleted": "sha256:abc"}]
    fake.reply("DELETE", "/images/busybox", Reply(200, removed))
    result = ketch(fake, "rmi", "-f", "busybox")
    assert result.stdout == "Untagged: busybox:latest\nDeleted: sha256:abc\n"
    assert fake.find("DELETE", "/images/busybox")[0].query == {"force": ["1"]}


def test_tag_splits_target(fake: FakeDocker) -> None:
    fake.reply("POST", "/images/busybox/tag", Reply(201))
    result = ketch(fake, "tag", "busybox", "127.0.0.1:5000/team/box:v2")
    assert result.returncode == 0, result.stderr
    query = fake.find("POST", "/images/busybox/tag")[0].query
    assert query == {"repo": ["127.0.0.1:5000/team/box"], "tag": ["v2"]}


def test_history_table(fake: FakeDocker) -> None:
    entries = [
        {
            "Id": "sha256:" + "a" * 64,
            "Created": 0,
            "CreatedBy": '/bin/sh -c #(nop) CMD ["sh"]',
            "Size": 0,
            "Comment": "",
        },
        {
            "Id": "<missing>",
            "Created": 0,
            "CreatedBy": "ADD file",
            "Size": 4_261_000,
            "Comment": "base",
        },
    ]
    fake.reply("GET", "/images/busybox/history", Reply(200, entries))
    result = ketch(fake, "history", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}", "busybox")
    assert result.stdout.splitlines() == [
        'aaaaaaaaaaaa|/bin/sh -c #(nop) CMD ["sh"]|0B',
        "<missing>|ADD file|4.26MB",
    ]


def test_push_sends_auth_and_tag(fake: FakeDocker, directory: Path) -> None:
    fake.reply(
        "POST",
        "/images/127.0.0.1:5000/app/push",
        Reply(200, lines=[{"status": "Pushed", "id": "abc"}]),
    )
    fake.reply("POST", "/auth", Reply(200, {"Status": "Login Succeeded"}))
    env = {"KETCH_CONFIG": str(directory / "config")}
    login = ketch(
        fake, "login", "-u", "me", "--password-stdin", "127.0.0.1:5000", input="secret\n", env=env
    )
    assert login.stdout == "Login Succeeded\n", login.stderr
    result = ketch(fake, "push", "127.0.0.1:5000/app:v1", env=env)
    assert result.returncode == 0, result.stderr
    request = fake.find("POST", "/images/127.0.0.1:5000/app/push")[0]
    assert request.query == {"tag": ["v1"]}
    credentials = json.loads(base64.urlsafe_b64decode(request.headers["x-registry-auth"]))
    assert credentials["username"] == "me"
    assert credentials["password"] == "secret"


def test_login_stores_and_logout_removes(fake: FakeDocker, directory: Path) -> None:
    fake.reply("POST", "/auth", Reply(200, {"Status": "Login Succeeded"}))
    env = {"KETCH_CONFIG": str(directory / "config")}
    ketch(fake, "login", "-u", "me", "--password-stdin", "reg.example", input="pw", env=env)
    config_file = directory / "config" / "config.json"
    assert oct(config_file.stat().st_mode & 0o777) == "0o600"
    assert "reg.example" in json.loads(config_file.read_text())["auths"]
    result = ketch(fake, "logout", "reg.example", env=env)
    assert result.stdout == "Removing login credentials for reg.example\n"
    assert json.loads(config_file.read_text())["auths"] == {}


def test_login_without_tty_exits_125(fake: FakeDocker) -> None:
    result = ketch(fake, "login", "reg.example", input="")
    assert result.returncode == 125
    assert "non TTY device" in result.stderr


def test_diff_kinds(fake: FakeDocker) -> None:
    changes = [
        {"Path": "/tmp", "Kind": 0},
        {"Path": "/tmp/a", "Kind": 1},
        {"Path": "/b", "Kind": 2},
    ]
    fake.reply("GET", "/containers/web/changes", Reply(200, changes))
    assert ketch(fake, "diff", "web").stdout == "C /tmp\nA /tmp/a\nD /b\n"


def test_commit_query(fake: FakeDocker) -> None:
    fake.reply("POST", "/commit", Reply(201, {"Id": "sha256:new"}))
    result = ketch(fake, "commit", "-m", "msg", "-c", "ENV A=1", "-c", "CMD sh", "web", "app:v1")
    assert result.stdout == "sha256:new\n"
    query = fake.find("POST", "/commit")[0].query
    assert query["container"] == ["web"]
    assert query["repo"] == ["app"]
    assert query["tag"] == ["v1"]
    assert query["changes"] == ["ENV A=1", "CMD sh"]


def test_export_to_file(fake: FakeDocker, directory: Path) -> None:
    fake.reply("GET", "/containers/web/export", Reply(200, raw=b"tar-bytes"))
    output = directory / "out.tar"
    result = ketch(fake, "export", "-o", str(output), "web")
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == b"tar-bytes"


def test_save_repeats_names(fake: FakeDocker) -> None:
    fake.reply("GET", "/images/get", Reply(200, raw=b"tar"))
    result = ketch(fake, "save", "a", "b")
    assert result.stdout == "tar"
    assert fake.find("GET", "/images/get")[0].query == {"names": ["a", "b"]}


def test_load_streams_file(fake: FakeDocker, directory: Path) -> None:
    fake.reply("POST", "/images/load", Reply(200, lines=[{"stream": "Loaded image: app:v1\n"}]))
    archive = directory / "in.tar"
    archive.write_bytes(b"x" * 100_000)
    result = ketch(fake, "load", "-i", str(archive))
    assert result.stdout == "Loaded image: app:v1\n"
    assert fake.find("POST", "/images/load")[0].body == b"x" * 100_000


def test_load_from_pipe_is_chunked(fake: FakeDocker) -> None:
    fake.reply("POST", "/images/load", Reply(200, lines=[{"stream": "Loaded\n"}]))
    result = ketch(fake, "load", input="tar-from-pipe")
    assert result.returncode == 0, result.stderr
    assert fake.find("POST", "/images/load")[0].body == b"tar-from-pipe"


def test_import_from_file(fake: FakeDocker, directory: Path) -> None:
    fake.reply("POST", "/images/create", Reply(200, lines=[{"status": "sha256:imported"}]))
    archive = directory / "root.tar"
    archive.write_bytes(b"rootfs")
    result = ketch(fake, "import", str(archive), "base:v1")
    assert result.stdout == "sha256:imported\n"
    request = fake.find("POST", "/images/create")[0]
    assert request.query == {"fromSrc": ["-"], "repo": ["base"], "tag": ["v1"]}
    assert request.body == b"rootfs"


def make_tar(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_cp_from_container_renames(fake: FakeDocker, directory: Path) -> None:
    fake.reply("GET", "/containers/web/archive", Reply(200, raw=make_tar("hosts", b"127.0.0.1\n")))
    result = ketch(fake, "cp", "web:/etc/hosts", str(directory / "copy"))
    assert result.returncode == 0, result.stderr
    assert (directory / "copy").read_bytes() == b"127.0.0.1\n"


def test_cp_from_container_into_directory(fake: FakeDocker, directory: Path) -> None:
    fake.reply("GET", "/containers/web/archive", Reply(200, raw=make_tar("hosts", b"x")))
    ketch(fake, "cp", "web:/etc/hosts", str(directory))
    assert (directory / "hosts").read_bytes() == b"x"


def test_cp_rejects_escaping_archive(fake: FakeDocker, directory: Path) -> None:
    fake.reply("GET", "/containers/web/archive", Reply(200, raw=make_tar("../evil", b"x")))
    target = directory / "inner"
    target.mkdir()
    result = ketch(fake, "cp", "web:/x", str(target))
    assert result.returncode != 0
    assert not (directory / "evil").exists()


def test_cp_into_container_directory(fake: FakeDocker, directory: Path) -> None:
    stat = base64.b64encode(json.dumps({"name": "tmp", "mode": (1 << 31) | 0o755}).encode())
    fake.reply(
        "HEAD",
        "/containers/web/archive",
        Reply(200, headers={"X-Docker-Container-Path-Stat": stat.decode()}),
    )
    fake.reply("PUT", "/containers/web/archive", Reply(200))
    source = directory / "note.txt"
    source.write_bytes(b"hello")
    result = ketch(fake, "cp", str(source), "web:/tmp")
    assert result.returncode == 0, result.stderr
    request = fake.find("PUT", "/containers/web/archive")[0]
    assert request.query == {"path": ["/tmp"]}
    with tarfile.open(fileobj=io.BytesIO(request.body)) as archive:
        assert archive.getnames() == ["note.txt"]


def test_cp_into_container_new_name(fake: FakeDocker, directory: Path) -> None:
    fake.reply(
        "HEAD",
        "/containers/web/archive",
        Reply(404, {"message": "Could not find the file /tmp/new"}),
    )
    fake.reply("PUT", "/containers/web/archive", Reply(200))
    source = directory / "note.txt"
    source.write_bytes(b"hello")
    ketch(fake, "cp", str(source), "web:/tmp/new")
    request = fake.find("PUT", "/containers/web/archive")[0]
    assert request.query == {"path": ["/tmp"]}
    with tarfile.open(fileobj=io.BytesIO(request.body)) as archive:
        assert archive.getnames() == ["new"]


def test_system_df_table(fake: FakeDocker) -> None:
    usage = {
        "LayersSize": 5_000_000,
        "Images": [{"Size": 5_000_000, "Containers": 1}],
        "Containers": [{"State": "exited", "SizeRw": 1000}],
        "Volumes": [],
        "BuildCache": [],
    }
    fake.reply("GET", "/system/df", Reply(200, usage))
    result = ketch(
        fake, "system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}} {{.Reclaimable}}"
    )
    assert result.stdout.splitlines()[:2] == ["Images 1 1 0B (0%)", "Containers 1 0 1kB (100%)"]


def test_system_df_shared_layers_reclaimable(fake: FakeDocker) -> None:
    # A 1 MB base layer under both images, and 1 MB of its own in each; only "app" is used.
    usage = {
        "LayersSize": 3_000_000,
        "Images": [
            {"Size": 2_000_000, "SharedSize": 1_000_000, "Containers": 1},
            {"Size": 2_000_000, "SharedSize": 1_000_000, "Containers": 0},
        ],
        "Containers": [],
        "Volumes": [],
        "BuildCache": [],
    }
    fake.reply("GET", "/system/df", Reply(200, usage))
    result = ketch(fake, "system", "df", "--format", "{{.Type}} {{.Size}} {{.Reclaimable}}")
    assert result.stdout.splitlines()[0] == "Images 3MB 2MB (66%)"


def test_container_prune_force(fake: FakeDocker) -> None:
    pruned = {"ContainersDeleted": ["c1"], "SpaceReclaimed": 2000}
    fake.reply("POST", "/containers/prune", Reply(200, pruned))
    result = ketch(fake, "container", "prune", "-f")
    assert result.stdout == "Deleted Containers:\nc1\n\nTotal reclaimed space: 2kB\n"


def test_image_prune_declined(fake: FakeDocker) -> None:
    result = ketch(fake, "image", "prune", input="n\n")
    assert result.returncode == 0
    assert fake.requests == []


def test_image_prune_all_filter(fake: FakeDocker) -> None:
    fake.reply("POST", "/images/prune", Reply(200, {"ImagesDeleted": [{"Deleted": "sha256:x"}]}))
    result = ketch(fake, "image", "prune", "-a", "-f")
    assert "deleted: sha256:x\n" in result.stdout
    query = fake.find("POST", "/images/prune")[0].query
    assert json.loads(query["filters"][0]) == {"dangling": ["false"]}


def test_container_group_maps_ls(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/json", Reply(200, []))
    result = ketch(fake, "container", "ls", "-a", "-n", "2", "-f", "status=exited")
    assert result.returncode == 0, result.stderr
    query = fake.find("GET", "/containers/json")[0].query
    assert query["all"] == ["1"]
    assert query["limit"] == ["2"]
    assert json.loads(query["filters"][0]) == {"status": ["exited"]}


def test_unknown_group_verb_exits_1(fake: FakeDocker) -> None:
    result = ketch(fake, "image", "frobnicate")
    assert result.returncode == 1
    assert "'image frobnicate' is not a ketch command" in result.stderr


def test_attach_copies_and_exits_with_status(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected()))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/wait", Reply(200, {"StatusCode": 9}))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/attach", Hijack(frame(1, b"late\n")))
    result = ketch(fake, "attach", "web")
    assert result.returncode == 9, result.stderr
    assert result.stdout == "late\n"
    query = fake.find("POST", f"/containers/{CONTAINER_ID}/attach")[0].query
    assert "stdin" not in query


def test_attach_stopped_container_exits_125(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected(running=False)))
    result = ketch(fake, "attach", "web")
    assert result.returncode == 125
    assert "You cannot attach to a stopped container" in result.stderr


def test_run_detach_keys_in_attach_query(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/create", Reply(201, {"Id": CONTAINER_ID}))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/attach", Hijack(b""))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/wait", Reply(200, {"StatusCode": 0}))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/start", Reply(204))
    result = ketch(fake, "run", "--detach-keys", "ctrl-x", "busybox", "true")
    assert result.returncode == 0, result.stderr
    query = fake.find("POST", f"/containers/{CONTAINER_ID}/attach")[0].query
    assert query["detachKeys"] == ["ctrl-x"]


def test_ps_size_template_requests_sizes(fake: FakeDocker) -> None:
    row = {"Id": CONTAINER_ID, "Names": ["/web"], "SizeRw": 2000, "SizeRootFs": 5_000_000}
    fake.reply("GET", "/containers/json", Reply(200, [row]))
    result = ketch(fake, "ps", "--format", "{{.Names}} {{.Size}}")
    assert result.stdout == "web 2kB (virtual 5MB)\n", result.stderr
    assert fake.find("GET", "/containers/json")[0].query["size"] == ["1"]


def test_image_inspect_skips_containers(fake: FakeDocker) -> None:
    fake.reply("GET", "/images/web/json", Reply(404, {"message": "No such image: web"}))
    result = ketch(fake, "image", "inspect", "web")
    assert result.returncode == 1
    assert result.stderr == "Error: No such image: web\n"
    assert fake.find("GET", "/containers/web/json") == []


def test_container_inspect_size_flag(fake: FakeDocker) -> None:
    fake.reply("GET", "/containers/web/json", Reply(200, inspected()))
    result = ketch(fake, "container", "inspect", "-s", "-f", "{{.Id}}", "web")
    assert result.stdout == CONTAINER_ID + "\n", result.stderr
    assert fake.find("GET", "/containers/web/json")[0].query == {"size": ["1"]}


def test_cp_rejects_write_through_planted_link(fake: FakeDocker, directory: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("out")
        link.type = tarfile.SYMTYPE
        link.linkname = str(directory / "outside")
        archive.addfile(link)
        planted = tarfile.TarInfo("out/evil")
        planted.size = 1
        archive.addfile(planted, io.BytesIO(b"x"))
    (directory / "outside").mkdir()
    (directory / "target").mkdir()
    fake.reply("GET", "/containers/web/archive", Reply(200, raw=buffer.getvalue()))
    result = ketch(fake, "cp", "web:/out", str(directory / "target"))
    assert result.returncode != 0
    assert "passes through a link" in result.stderr
    assert not (directory / "outside" / "evil").exists()


def test_images_digests_column(fake: FakeDocker) -> None:
    image = {
        "Id": "sha256:" + "e" * 64,
        "RepoTags": ["busybox:latest"],
        "RepoDigests": ["busybox@sha256:" + "f" * 64],
        "Created": 0,
        "Size": 1000,
    }
    fake.reply("GET", "/images/json", Reply(200, [image]))
    result = ketch(fake, "images", "-a", "--digests")
    header, row = result.stdout.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[2] == "sha256:" + "f" * 64
    assert fake.find("GET", "/images/json")[0].query == {"all": ["1"]}


def test_pull_all_tags_and_platform(fake: FakeDocker) -> None:
    fake.reply("POST", "/images/create", Reply(200, lines=[{"status": "Pulling from team/app"}]))
    result = ketch(fake, "pull", "-a", "--platform", "linux/amd64", "team/app")
    assert result.stdout.splitlines()[-1] == "docker.io/team/app", result.stderr
    query = fake.find("POST", "/images/create")[0].query
    assert query == {"fromImage": ["team/app"], "tag": [""], "platform": ["linux/amd64"]}


def test_pull_all_tags_with_tag_exits_125(fake: FakeDocker) -> None:
    result = ketch(fake, "pull", "-a", "team/app:v1")
    assert result.returncode == 125
    assert fake.requests == []


def test_stats_stream_redraws_until_interrupted(fake: FakeDocker) -> None:
    import os
    import signal
    import subprocess
    import sys

    sample = {"id": CONTAINER_ID, "name": "/web", "pids_stats": {"current": 3}}
    fake.reply("GET", "/containers/web/stats", Reply(200, lines=[sample]))
    command = [sys.executable, "-m", "ketch.cli.main", "-H", fake.host, "stats"]
    process = subprocess.Popen(
        [*command, "--format", "{{.Name}} {{.PIDs}}", "web"],
        stdout=subprocess.PIPE,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "KETCH_HOST"},
    )
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert first == "web 3\n"
    assert status == 130
    assert fake.find("GET", "/containers/web/stats")[0].query == {"stream": ["1"]}
