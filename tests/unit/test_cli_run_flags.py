"""``ketch run`` and ``create`` flags: the create body they make, the errors that stop
them before any request, and ``run -it`` through a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_ketch
from support.fake_docker import FakeDocker, Hijack, Reply, serve_fake_docker

CONTAINER_ID = "d" * 64


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
        served.reply("POST", "/containers/create", Reply(201, {"Id": CONTAINER_ID}))
        served.reply("POST", f"/containers/{CONTAINER_ID}/start", Reply(204))
        yield served


def created_body(fake: FakeDocker, *flags: str) -> dict:
    result = run_ketch("create", *flags, "busybox", "true", host=fake.host)
    assert result.returncode == 0, result.stderr
    return fake.find("POST", "/containers/create")[-1].json()


def test_flags_fill_config(fake: FakeDocker) -> None:
    body = created_body(
        fake, "-w", "/srv", "-u", "1000:1000", "--entrypoint", "/bin/sh", "-h", "box",
        "-l", "a=1", "--stop-signal", "SIGUSR1", "--stop-timeout", "7", "--expose", "80",
    )  # fmt: skip
    assert body["WorkingDir"] == "/srv"
    assert body["User"] == "1000:1000"
    assert body["Entrypoint"] == ["/bin/sh"]
    assert body["Hostname"] == "box"
    assert body["Labels"] == {"a": "1"}
    assert body["StopSignal"] == "SIGUSR1"
    assert body["StopTimeout"] == 7
    assert body["ExposedPorts"] == {"80/tcp": {}}


HOST_CONFIG_CASES = [
    (["-m", "512m"], "Memory", 512 * 1024 * 1024),
    (["--memory-swap", "-1"], "MemorySwap", -1),
    (["--cpus", "0.5"], "NanoCpus", 500_000_000),
    (["--cpu-shares", "512"], "CpuShares", 512),
    (["--cpuset-cpus", "0"], "CpusetCpus", "0"),
    (["--pids-limit", "64"], "PidsLimit", 64),
    (["--cap-add", "NET_ADMIN", "--cap-drop", "ALL"], "CapAdd", ["NET_ADMIN"]),
    (["--cap-drop", "ALL"], "CapDrop", ["ALL"]),
    (["--privileged"], "Privileged", True),
    (["--read-only"], "ReadonlyRootfs", True),
    (["--init"], "Init", True),
    (
        ["--restart", "on-failure:2"],
        "RestartPolicy",
        {"Name": "on-failure", "MaximumRetryCount": 2},
    ),
    (["--restart", "unless-stopped"], "RestartPolicy", {"Name": "unless-stopped"}),
    (["--add-host", "db:10.0.0.2"], "ExtraHosts", ["db:10.0.0.2"]),
    (["--dns", "10.0.0.53"], "Dns", ["10.0.0.53"]),
    (["--ulimit", "nofile=1024:2048"], "Ulimits", [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]),
    (["--tmpfs", "/run:size=1m"], "Tmpfs", {"/run": "size=1m"}),
    (["--security-opt", "no-new-privileges"], "SecurityOpt", ["no-new-privileges"]),
    (["--shm-size", "64m"], "ShmSize", 64 * 1024 * 1024),
    (["--sysctl", "net.ipv4.ip_forward=1"], "Sysctls", {"net.ipv4.ip_forward": "1"}),
    (["-v", "/srv:/data:ro"], "Binds", ["/srv:/data:ro"]),
    (
        ["--mount", "type=bind,source=/srv,target=/data,readonly"],
        "Mounts",
        [{"Type": "bind", "Target": "/data", "Source": "/srv", "ReadOnly": True}],
    ),
    (
        ["-p", "127.0.0.1:8080:80"],
        "PortBindings",
        {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
    ),
    (["--network", "none"], "NetworkMode", "none"),
]


@pytest.mark.parametrize(("flags", "field", "expected"), HOST_CONFIG_CASES)
def test_flags_fill_host_config(
    fake: FakeDocker, flags: list[str], field: str, expected: object
) -> None:
    assert created_body(fake, *flags)["HostConfig"][field] == expected


def test_unset_flags_send_nothing(fake: FakeDocker) -> None:
    body = created_body(fake)
    assert body["HostConfig"] == {"AutoRemove": False, "NetworkMode": "default"}
    assert "Healthcheck" not in body


def test_health_flags(fake: FakeDocker) -> None:
    body = created_body(
        fake, "--health-cmd", "true", "--health-interval", "1m30s", "--health-retries", "2",
        "--health-timeout", "500ms", "--health-start-period", "2s",
    )  # fmt: skip
    assert body["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"],
        "Interval": 90_000_000_000,
        "Timeout": 500_000_000,
        "StartPeriod": 2_000_000_000,
        "Retries": 2,
    }


def test_env_file_and_label_file(fake: FakeDocker, directory: Path) -> None:
    env_file = directory / "app.env"
    env_file.write_text("# comment\n\nA=1\n  B=two words\nFROM_CLI\nUNSET_HERE\n")
    label_file = directory / "labels"
    label_file.write_text("tier=front\n# no\n")
    result = run_ketch(
        "create", "--env-file", str(env_file), "-e", "C=3", "--label-file", str(label_file),
        "busybox", host=fake.host, env={"FROM_CLI": "yes"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = fake.find("POST", "/containers/create")[0].json()
    assert body["Env"] == ["A=1", "B=two words", "FROM_CLI=yes", "C=3"]
    assert body["Labels"] == {"tier": "front"}


BAD_INPUT = [
    (["--env-file", "{dir}/bad.env"], "invalid env file {dir}/bad.env, line 2: poorly formatted"),
    (["--env-file", "{dir}/missing.env"], "cannot read --env-file {dir}/missing.env"),
    (["--rm", "--restart", "always"], "Conflicting options: --restart and --rm"),
    (["--restart", "sometimes"], "invalid restart policy 'sometimes'"),
    (["--restart", "always:3"], "maximum retry count cannot be used with restart policy 'always'"),
    (["-m", "lots"], 'invalid argument "lots" for "-m, --memory" flag: invalid size'),
    (["--cpus", "two"], 'invalid argument "two" for "--cpus" flag'),
    (["--ulimit", "nofile=9:1"], "soft limit 9 is above the hard limit 1"),
    (["--health-interval", "soon"], 'invalid argument "soon" for "--health-interval" flag'),
    (["--mount", "type=bind,target=/x"], "source is required for a bind mount"),
    (["-p", "http"], 'invalid argument "http" for "-p, --publish" flag'),
    (["--pull", "sometimes"], 'invalid pull option: "sometimes"'),
    (["--bogus"], "unknown flag: --bogus"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_INPUT)
def test_bad_input_exits_125(
    fake: FakeDocker, directory: Path, flags: list[str], message: str
) -> None:
    (directory / "bad.env").write_text("GOOD=1\nBAD NAME=2\n")
    argv = [flag.replace("{dir}", str(directory)) for flag in flags]
    result = run_ketch("run", *argv, "busybox", "true", host=fake.host)
    assert result.returncode == 125
    assert message.replace("{dir}", str(directory)) in result.stderr
    assert fake.requests == []


def test_sig_proxy_false_parses(fake: FakeDocker) -> None:
    result = run_ketch("run", "-d", "--sig-proxy=false", "busybox", host=fake.host)
    assert result.stdout == CONTAINER_ID + "\n", result.stderr


def test_pull_never_does_not_pull(fake: FakeDocker) -> None:
    fake.reply("POST", "/containers/create", Reply(404, {"message": "No such image: nope:latest"}))
    result = run_ketch("run", "--pull", "never", "nope", host=fake.host)
    assert result.returncode == 125
    assert fake.find("POST", "/images/create") == []


def read_until_exit(fd: int, pid: int, timeout: float = 30) -> tuple[bytes, int]:
    """Read a pty's output until the child exits; return the output and its status."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            output += data
            if not data:
                break
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return output, os.waitstatus_to_exitcode(status)
    _, status = os.waitpid(pid, 0)
    return output, os.waitstatus_to_exitcode(status)


def test_run_interactive_tty(fake: FakeDocker) -> None:
    fake.reply("POST", f"/containers/{CONTAINER_ID}/attach", Hijack(b"/ # hello from tty\r\n"))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/wait", Reply(200, {"StatusCode": 5}))
    fake.reply("POST", f"/containers/{CONTAINER_ID}/resize", Reply(200))
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.pop("KETCH_HOST", None)
        argv = [sys.executable, "-m", "ketch.cli.main", "-H", fake.host, "run", "-it"]
        os.execv(sys.executable, [*argv, "busybox", "sh"])

    try:
        output, status = read_until_exit(fd, pid)
    finally:
        os.close(fd)
    assert status == 5, output
    assert b"/ # hello from tty" in output

    body = fake.find("POST", "/containers/create")[0].json()
    assert body["Tty"] is True
    assert body["AttachStdin"] is True
    assert body["OpenStdin"] is True
    resize = fake.find("POST", f"/containers/{CONTAINER_ID}/resize")
    assert resize, "the terminal size was not sent"
    assert resize[0].query["w"][0].isdigit()
    attach = fake.find("POST", f"/containers/{CONTAINER_ID}/attach")[0]
    assert attach.query["stdin"] == ["1"]


def test_run_it_without_terminal_exits_1(fake: FakeDocker) -> None:
    result = run_ketch("run", "-it", "busybox", "sh", host=fake.host, input="")
    assert result.returncode == 1
    assert "the input device is not a TTY" in result.stderr
    assert fake.requests == []


def test_exec_it_without_terminal_exits_1(fake: FakeDocker) -> None:
    result = run_ketch("exec", "-it", "web", "sh", host=fake.host, input="")
    assert result.returncode == 1
    assert "the input device is not a TTY" in result.stderr
    assert fake.requests == []
