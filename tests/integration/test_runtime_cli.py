"""``ketch-runc`` as a command: the runc verbs, exit statuses and one-line errors."""

from __future__ import annotations

import json
import signal
import time

import pytest

from support.runtime_cli import Cli

pytest_plugins = ["support.rootfs"]


@pytest.fixture
def cli(runner):
    return Cli(runner)


def test_run_exit_status(cli):
    bundle = cli.bundle("r1", ["sh", "-c", "echo out; exit 5"])
    result = cli("run", "--bundle", str(bundle), "r1")
    assert result.returncode == 5
    assert result.stdout == "out\n"


def test_run_deletes_container(cli):
    bundle = cli.bundle("r2", ["true"])
    cli("run", "--bundle", str(bundle), "r2")
    assert cli("state", "r2").returncode == 1


def test_run_signal_status(cli):
    bundle = cli.bundle("r3", ["sleep", "30"])
    process = cli.popen("run", "--bundle", str(bundle), "r3")
    try:
        _wait_for_status(cli, "r3", "running")
        assert cli("kill", "r3", "KILL").returncode == 0
        assert process.wait(timeout=30) == 137
    finally:
        process.kill()
        process.wait()


def test_create_start_state_delete(cli):
    bundle = cli.bundle("c1", ["sleep", "30"])
    assert cli("create", "--bundle", str(bundle), "c1").returncode == 0
    assert json.loads(cli("state", "c1").stdout)["status"] == "created"
    assert cli("start", "c1").returncode == 0
    assert json.loads(cli("state", "c1").stdout)["status"] == "running"
    assert cli("kill", "c1", "KILL").returncode == 0
    _wait_for_status(cli, "c1", "stopped")
    assert cli("delete", "c1").returncode == 0
    assert cli("state", "c1").returncode == 1


def test_pid_file(cli, tmp_path):
    bundle = cli.bundle("p1", ["true"])
    pid_file = tmp_path / "pid"
    cli("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "p1")
    assert int(pid_file.read_text()) == json.loads(cli("state", "p1").stdout)["pid"]


def test_kill_signal_forms(cli):
    bundle = cli.bundle("k1", ["sleep", "30"])
    cli("create", "--bundle", str(bundle), "k1")
    cli("start", "k1")
    assert cli("kill", "k1", str(int(signal.SIGKILL))).returncode == 0
    _wait_for_status(cli, "k1", "stopped")


def test_error_one_line_status_1(cli):
    result = cli("state", "missing")
    assert result.returncode == 1
    assert result.stderr == "ketch-runc: container missing does not exist\n"


def test_bad_config_error_names_field(cli):
    bundle = cli.bundle("bad", ["true"])
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["cwd"] = "relative"
    (bundle / "config.json").write_text(json.dumps(config))
    result = cli("create", "--bundle", str(bundle), "bad")
    assert result.returncode == 1
    assert "process.cwd" in result.stderr
    assert result.stderr.count("\n") == 1


def test_executable_not_found_message(cli):
    bundle = cli.bundle("nf", ["nothere"])
    result = cli("run", "--bundle", str(bundle), "nf")
    assert result.returncode == 1
    assert 'exec: "nothere": executable file not found in $PATH' in result.stderr


def test_log_file_json(cli, tmp_path):
    log = tmp_path / "runc.log"
    result = cli("--log", str(log), "--log-format", "json", "state", "missing")
    assert result.returncode == 1
    entry = json.loads(log.read_text())
    assert entry["level"] == "error"
    assert entry["msg"] == "container missing does not exist"


def test_spec_writes_config(cli, tmp_path):
    target = tmp_path / "newbundle"
    target.mkdir()
    assert cli("spec", "--bundle", str(target)).returncode == 0
    assert json.loads((target / "config.json").read_text())["process"]["args"] == ["sh"]


def test_spec_refuses_overwrite(cli, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = cli("spec", "--bundle", str(tmp_path))
    assert result.returncode == 1
    assert (tmp_path / "config.json").read_text() == "{}"


def test_list_quiet(cli):
    bundle = cli.bundle("l1", ["true"])
    cli("create", "--bundle", str(bundle), "l1")
    assert cli("list", "-q").stdout == "l1\n"


def _wait_for_status(cli: Cli, container_id: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while _status(cli, container_id) != status:
        assert time.monotonic() < deadline, f"{container_id} never became {status}"
        time.sleep(0.02)


def _status(cli: Cli, container_id: str) -> str | None:
    result = cli("state", container_id)
    return json.loads(result.stdout)["status"] if result.returncode == 0 else None


def test_run_forwards_signals(cli):
    script = "trap 'exit 42' TERM; while true; do sleep 0.1; done"
    bundle = cli.bundle("f1", ["sh", "-c", script])
    process = cli.popen("run", "--bundle", str(bundle), "f1")
    try:
        _wait_for_status(cli, "f1", "running")
        time.sleep(0.2)  # let sh install its trap
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 42
    finally:
        process.kill()
        process.wait()


def test_version_printed(cli):
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ketch-runc version ")


def test_systemd_cgroup_rejected(cli):
    result = cli("--systemd-cgroup", "state", "x")
    assert result.returncode == 1
    assert "--systemd-cgroup" in result.stderr
