"""The process object ``ketch-runc exec`` builds from its options, and the update flags."""

from __future__ import annotations

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime import cli_extras, exec_options

TEMPLATE = {
    "args": ["sleep", "60"],
    "env": ["PATH=/bin", "A=1"],
    "cwd": "/",
    "user": {"uid": 0, "gid": 0},
    "terminal": True,
    "consoleSize": {"height": 10, "width": 20},
    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
}


def _build(**options) -> dict:
    return exec_options.process_from_options(TEMPLATE, ["ls", "-l"], terminal=False, **options)


def test_args_replaced():
    assert _build()["args"] == ["ls", "-l"]


def test_terminal_off_drops_console_size():
    assert "consoleSize" not in _build()


def test_template_unchanged():
    _build(env=["A=2"], caps=["CAP_CHOWN"])
    assert TEMPLATE["env"] == ["PATH=/bin", "A=1"]
    assert TEMPLATE["capabilities"]["bounding"] == ["CAP_KILL"]


def test_env_overrides_and_adds():
    assert _build(env=["A=2", "B=3"])["env"] == ["PATH=/bin", "A=2", "B=3"]


def test_env_without_equals_rejected():
    with pytest.raises(InvalidArgument, match="--env"):
        _build(env=["NOVALUE"])


def test_user_uid_gid():
    assert _build(user="1000:1001")["user"] == {"uid": 1000, "gid": 1001}


def test_user_uid_only_keeps_gid():
    assert _build(user="1000")["user"] == {"uid": 1000, "gid": 0}


def test_user_name_rejected():
    with pytest.raises(InvalidArgument, match="UID"):
        _build(user="app")


def test_cap_added_with_prefix():
    capabilities = _build(caps=["chown"])["capabilities"]
    assert capabilities["bounding"] == ["CAP_KILL", "CAP_CHOWN"]
    assert capabilities["permitted"] == ["CAP_CHOWN"]
    assert "ambient" not in capabilities


def test_cwd_and_gids():
    process = _build(cwd="/tmp", additional_gids=[5, 6])
    assert process["cwd"] == "/tmp"
    assert process["user"]["additionalGids"] == [5, 6]


def test_no_command_rejected():
    with pytest.raises(InvalidArgument, match="command"):
        exec_options.process_from_options(TEMPLATE, [], terminal=False)


def test_filter_ps_keeps_header_and_pids():
    output = "UID PID PPID CMD\nroot 1 0 init\nroot 42 1 sleep\nroot 43 1 other\n"
    assert cli_extras._filter_ps(output, {42}) == "UID PID PPID CMD\nroot 42 1 sleep\n"


def test_filter_ps_without_pid_column():
    with pytest.raises(InvalidArgument, match="PID"):
        cli_extras._filter_ps("USER CMD\nroot x\n", {1})


@pytest.mark.parametrize(
    ("flag", "name", "text", "value"),
    [
        ("--memory", "limit", "32m", 32 << 20),
        ("--memory", "limit", "1024", 1024),
        ("--memory-swap", "swap", "-1", -1),
        ("--pids-limit", "limit", "20", 20),
        ("--cpuset-cpus", "cpus", "0-1", "0-1"),
    ],
)
def test_update_flag_values(flag, name, text, value):
    assert cli_extras._flag_value(flag, name, text) == value


def test_update_flag_suffix_only_for_memory():
    with pytest.raises(InvalidArgument, match="--pids-limit"):
        cli_extras._flag_value("--pids-limit", "limit", "2k")
