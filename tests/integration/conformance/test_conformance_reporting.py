"""Conformance of what a runtime reports to its caller: the JSON error log, ``features``,
the state's annotations and times, and the effects callers rely on (console size,
seccomp kill action, hook timeouts)."""

from __future__ import annotations

import datetime
import json
import os
import socket
import time

from oci_probe import receive_console

LONG_SLEEP = ["sleep", "300"]


def test_json_log_error_record(oci, tmp_path):
    log = tmp_path / "runtime-log.json"
    config = oci.config(["true"])
    config["process"]["cwd"] = "relative/cwd"
    container_id, directory = oci.bundle(config)
    result = oci(
        "--log", str(log), "--log-format", "json", "create", "--bundle", str(directory),
        container_id,
    )  # fmt: skip
    assert result.returncode == 1
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [record for record in records if record.get("level") == "error"]
    assert errors, records
    assert errors[-1]["msg"]


def test_features_lists_hooks_and_namespaces(oci):
    result = oci("features")
    assert result.returncode == 0, result.stderr
    features = json.loads(result.stdout)
    assert features["ociVersionMin"].startswith("1.")
    assert set(features["hooks"]) == {
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    }
    namespaces = set(features["linux"]["namespaces"])
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= namespaces


def test_state_annotations(oci):
    annotations = {"org.example.owner": "conformance", "org.example.empty": ""}
    container_id, result = oci.create(LONG_SLEEP, annotations=annotations)
    assert result.returncode == 0, result.stderr
    assert oci.state(container_id)["annotations"] == annotations


def test_state_created_time(oci):
    before = datetime.datetime.now(datetime.UTC)
    container_id, result = oci.create(LONG_SLEEP)
    assert result.returncode == 0, result.stderr
    created = oci.state(container_id)["created"]
    # runc (Go) prints nanoseconds, and fromisoformat reads only up to microseconds.
    whole, _, fraction = created.rstrip("Z").partition(".")
    parsed = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    assert abs((parsed - before).total_seconds()) < 120
    assert fraction == "" or fraction.rstrip("Z").isdigit()


def test_console_size(oci, tmp_path):
    socket_path = tmp_path / "console.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)
    listener.settimeout(60)
    config = oci.config(["sh", "-c", "stty size; sleep 300"])
    config["process"]["terminal"] = True
    config["process"]["consoleSize"] = {"height": 33, "width": 101}
    container_id, directory = oci.bundle(config)
    with listener:
        result = oci(
            "create", "--bundle", str(directory), "--console-socket", str(socket_path),
            container_id,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        master = receive_console(listener)
    try:
        oci("start", container_id)
        output = b""
        deadline = time.monotonic() + 30
        while b"\n" not in output and time.monotonic() < deadline:
            output += os.read(master, 1024)
    finally:
        os.close(master)
    assert output.split(b"\r\n")[0] == b"33 101"


def test_seccomp_kill_action(oci):
    seccomp = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}],
    }
    result = oci.run(["mkdir", "/tmp/seccomp-killed"], linux={"seccomp": seccomp})
    # SCMP_ACT_KILL kills the thread with SIGSYS (31).
    assert result.returncode == 128 + 31
    assert not (oci.rootfs / "tmp" / "seccomp-killed").exists()


def test_hook_timeout(oci):
    # exec, so that the timeout's kill reaches the process that keeps the hook's stdio open.
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 30"], "timeout": 1}
    started = time.monotonic()
    container_id, result = oci.create(LONG_SLEEP, hooks={"createRuntime": [hook]})
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 25
    assert oci("state", container_id).returncode == 1
