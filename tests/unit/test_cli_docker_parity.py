"""Exit statuses and output of the ``ketch`` CLI that must match the docker CLI 28, run in
a subprocess against the API server with a fake engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_ketch
from support.fake_engine import ServedEngine, serve_fake_engine


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    directory = Path(tempfile.mkdtemp(prefix="ketch-cli-", dir="/tmp"))
    try:
        with serve_fake_engine(directory / "api.sock") as served:
            served.engine.add_image("busybox:latest")
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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
