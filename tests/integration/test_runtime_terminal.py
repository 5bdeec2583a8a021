"""Containers with process.terminal: the pty sent over a console socket, and run's proxy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime import console

pytest_plugins = ["support.rootfs"]


@pytest.fixture
def console_listener(tmp_path):
    path = tmp_path / "console.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        yield path, listener


def _read_until_closed(master: int) -> bytes:
    output = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the container's side is closed
            return output
        if not data:
            return output
        output += data


def _run_with_console(runner, console_listener, args, **process) -> tuple[str, int]:
    path, listener = console_listener
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, args, process={"terminal": True, **process})
    runner.ids.append(container_id)
    pid = runner.runtime.create(container_id, bundle, console_socket=path)
    master = console.receive_master(listener)
    try:
        runner.runtime.start(container_id)
        output = _read_until_closed(master)
    finally:
        os.close(master)
    return output.decode(), runner.wait(pid)


def test_terminal_is_stdio(runner, console_listener):
    script = "tty; [ -t 0 ] && [ -t 1 ] && echo interactive"
    output, status = _run_with_console(runner, console_listener, ["sh", "-c", script])
    assert output == "/dev/pts/0\r\ninteractive\r\n"
    assert status == 0


def test_terminal_size_from_config(runner, console_listener):
    output, _ = _run_with_console(
        runner, console_listener, ["stty", "size"], consoleSize={"height": 30, "width": 100}
    )
    assert output == "30 100\r\n"


def test_terminal_owned_by_user(runner, console_listener):
    output, _ = _run_with_console(
        runner,
        console_listener,
        ["sh", "-c", "echo reopened > $(tty)"],
        user={"uid": 1000, "gid": 1000},
    )
    assert output == "reopened\r\n"


def test_terminal_needs_console_socket(runner):
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, ["true"], process={"terminal": True})
    with pytest.raises(InvalidArgument, match="console socket is required"):
        runner.runtime.create(container_id, bundle)
    assert not (runner.root / "state" / container_id).exists()


def test_console_socket_without_terminal(runner, console_listener):
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, ["true"])
    with pytest.raises(InvalidArgument, match="process.terminal is false"):
        runner.runtime.create(container_id, bundle, console_socket=console_listener[0])


def test_run_proxies_terminal(runner):
    bundle = runner.bundle("t1", ["sh", "-c", "tty; exit 3"], process={"terminal": True})
    runner.ids.append("t1")
    master, slave = os.openpty()
    command = [sys.executable, "-m", "ketch.runtime.cli", "--root"]
    command += [str(runner.runtime.state_root), "run", "--bundle", str(bundle), "t1"]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        output = _read_until_closed(master)
        assert process.wait(timeout=30) == 3
    finally:
        os.close(master)
        process.kill()
        process.wait()
    assert b"/dev/pts/0" in output
