"""``ketch exec -t``: the exec body carries the terminal's size when stdin is a terminal."""

from __future__ import annotations

import os

import pytest

from ketch.cli import exec as exec_command

OPTIONS = {
    "detach": False,
    "interactive": True,
    "tty": True,
    "env": [],
    "env-file": [],
    "user": "",
    "workdir": "",
    "detach-keys": "",
    "privileged": False,
}


def test_body_console_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((101, 33)))
    body = exec_command.exec_body(["sh"], OPTIONS)
    assert body["ConsoleSize"] == [33, 101]


def test_body_no_console_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "isatty", lambda fd: False)
    body = exec_command.exec_body(["sh"], OPTIONS)
    assert "ConsoleSize" not in body


def test_body_no_console_without_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    body = exec_command.exec_body(["sh"], {**OPTIONS, "tty": False})
    assert "ConsoleSize" not in body
