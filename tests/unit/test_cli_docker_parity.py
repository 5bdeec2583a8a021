"""Exit statuses and output of the ``ketch`` CLI that must match the docker CLI 28.

The commands run in a subprocess against the API server with a fake engine, or against a
scripted Engine API server. The progress and event formatters are called directly."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.cli.events import format_event
from ketch.cli.progress import ProgressDisplay
from support.cli import run_ketch, served_engine, served_fake_docker
from support.fake_docker import FakeDocker, Reply
from support.fake_engine import ServedEngine

PUSH_DIGEST = "sha256:" + "e" * 64
PUSH_MESSAGES = [
    {"status": "The push refers to repository [127.0.0.1:5000/app]"},
    {"status": "Preparing", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Pushed", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": f"v1: digest: {PUSH_DIGEST} size: 527"},
    {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": PUSH_DIGEST, "Size": 527}},
]


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    with served_engine() as served:
        yield served


@pytest.fixture
def fake() -> Iterator[FakeDocker]:
    with served_fake_docker() as served:
        yield served


@pytest.mark.parametrize(
    "flags",
    [("-d", "-a", "stdout"), ("-it", "-d", "--attach", "stdout"), ("-a", "stderr", "--detach")],
)
def test_run_attach_with_detach_rejected(served: ServedEngine, flags: tuple[str, ...]) -> None:
    result = run_ketch("run", *flags, "busybox", "true", host=served.host)
    assert result.returncode == 1
    assert result.stderr == "conflicting options: cannot specify both --attach and --detach\n"
    assert result.stdout == ""
    assert served.engine.containers == {}


def test_rm_force_missing_exits_0(served: ServedEngine) -> None:
    result = run_ketch("rm", "-f", "nosuch", host=served.host)
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == "Error response from daemon: No such container: nosuch\n"


def test_rm_missing_without_force_exits_1(served: ServedEngine) -> None:
    result = run_ketch("rm", "nosuch", host=served.host)
    assert result.returncode == 1
    assert result.stderr == "Error response from daemon: No such container: nosuch\n"


def test_cp_missing_local_source_exits_1(served: ServedEngine) -> None:
    missing = Path(tempfile.gettempdir()) / "ketch-cp-source-that-does-not-exist"
    result = run_ketch("cp", str(missing), "web:/tmp/", host=served.host)
    assert result.returncode == 1
    assert result.stderr == f"lstat {missing}: no such file or directory\n"
    assert "--help" not in result.stderr


def test_cp_between_containers_exits_1(served: ServedEngine) -> None:
    result = run_ketch("cp", "web:/a", "db:/b", host=served.host)
    assert result.returncode == 1
    assert result.stderr == "copying between containers is not supported\n"


@pytest.mark.parametrize("command", ["save", "export"])
def test_archive_to_terminal_exits_1(served: ServedEngine, command: str) -> None:
    controller, terminal = os.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ketch.cli.main", "-H", served.host, command, "busybox"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 1
    assert result.stderr == (
        "cowardly refusing to save to a terminal. Use the -o flag or redirect\n"
    )


def test_push_output_ends_with_digest(fake: FakeDocker) -> None:
    fake.reply("POST", "/images/127.0.0.1:5000/app/push", Reply(200, lines=PUSH_MESSAGES))
    result = run_ketch("push", "127.0.0.1:5000/app:v1", host=fake.host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "The push refers to repository [127.0.0.1:5000/app]",
        "a1b2c3d4e5f6: Preparing",
        "a1b2c3d4e5f6: Pushed",
        f"v1: digest: {PUSH_DIGEST} size: 527",
    ]
    assert result.stdout.endswith("size: 527\n")


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_skips_aux_message(terminal: bool) -> None:
    output = io.StringIO()
    display = ProgressDisplay(output, terminal=terminal)
    for message in PUSH_MESSAGES[3:]:
        display.show(message)
    assert output.getvalue() == f"v1: digest: {PUSH_DIGEST} size: 527\n"


def test_pull_missing_image_error_order(served: ServedEngine) -> None:
    # stdout and stderr share one pipe, as in "ketch pull nosuchimage 2>&1 | cat", and
    # stdout is block-buffered, as it is without PYTHONUNBUFFERED.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    result = subprocess.run(
        [sys.executable, "-m", "ketch.cli.main", "-H", served.host, "pull", "nosuchimage"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        env=environment,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "Using default tag: latest",
        "Error response from daemon: manifest unknown",
    ]


EVENT_TIME_NANO = 1700000000123456789


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "2023-11-14T22:13:20.123456789Z"),
        ("Europe/London", "2023-11-14T22:13:20.123456789Z"),
        ("Europe/Berlin", "2023-11-14T23:13:20.123456789+01:00"),
        ("America/New_York", "2023-11-14T17:13:20.123456789-05:00"),
    ],
)
def test_event_time_layout(monkeypatch: pytest.MonkeyPatch, zone: str, expected: str) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        line = format_event({"Type": "container", "Action": "start", "timeNano": EVENT_TIME_NANO})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == f"{expected} container start "


def test_event_time_from_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        line = format_event({"Type": "network", "Action": "create", "time": 1700000000})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == "2023-11-14T22:13:20.000000000Z network create "


def test_event_without_time() -> None:
    event = {"Type": "image", "Action": "pull", "Actor": {"ID": "busybox:latest"}}
    assert format_event(event) == "image pull busybox:latest"
