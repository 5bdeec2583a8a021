"""The pieces that keep ketch-runc's start-up short: the launcher script, the JSON reader
that avoids importing json, and the verbs' import sets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ketch.runtime import json_text, launcher, signals, state

SAMPLES = [
    {"id": "web", "pid": 12, "annotations": {}, "cgroups": {"directories": {"pids": "/x"}}},
    [1, -2, 3.5, 1e300, None, True, False, "", 'é\u2028\n"\\'],
    "text",
    0,
]


@pytest.mark.parametrize("value", SAMPLES)
def test_json_text_matches_json(value: object) -> None:
    assert json_text.loads(json.dumps(value)) == value


@pytest.mark.parametrize("value", [*SAMPLES, {}, [], {"a": {}, "b": [[], {"c": None}]}])
@pytest.mark.parametrize("indent", [None, 0, 2])
def test_json_text_dumps_matches_json(value: object, indent: int | None) -> None:
    assert json_text.dumps(value, indent=indent) == json.dumps(value, indent=indent)


@pytest.mark.parametrize("value", [1.5, (1, 2), {1: "a"}, {"a": float("nan")}])
def test_json_text_dumps_other_types(value: object) -> None:
    assert json_text.dumps(value) == json.dumps(value)


def test_json_text_surrounding_whitespace() -> None:
    assert json_text.loads(' \n{"a": 1}\t\n') == {"a": 1}


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", "{'a': 1}", "nul"])
def test_json_text_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        json_text.loads(text)


def test_read_record_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / state.STATE_FILE).write_text('{"id": "web",')
    with pytest.raises(state.SystemFailure, match="invalid state record"):
        state.read_record(tmp_path, "web")


@pytest.mark.parametrize("container_id", ["a", "web-1", "a_b+c.d", "é1", "x" * 1024])
def test_validate_id_accepts(container_id: str) -> None:
    state.validate_id(container_id)


@pytest.mark.parametrize("container_id", ["", ".", "..", "a/b", "a b", "a\n", "x" * 1025])
def test_validate_id_rejects(container_id: str) -> None:
    with pytest.raises(state.InvalidArgument, match="invalid container id"):
        state.validate_id(container_id)


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_launcher_runs_cli(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    launcher.write_launcher(str(script))
    completed = run_script(script, "--version")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ketch-runc version")


def test_launcher_skips_site(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    launcher.write_launcher(str(script))
    first_line = script.read_text().splitlines()[0]
    assert first_line == f"#!{sys.executable} -IS"


def test_launcher_falls_back_to_site(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    script.write_text(launcher.launcher_text(sys.executable, str(tmp_path / "moved")))
    script.chmod(0o755)
    completed = run_script(script, "--version")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ketch-runc version")


def test_launcher_flushes_output(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    launcher.write_launcher(str(script))
    write_stopped_record(tmp_path, "web")
    completed = run_script(script, "--root", str(tmp_path), "state", "web")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["status"] == "stopped"


def test_launcher_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    launcher.write_launcher(str(script))
    completed = run_script(script, "--root", str(tmp_path), "delete", "missing")
    assert completed.returncode == 1
    assert completed.stderr == "ketch-runc: container missing does not exist\n"


def test_launcher_rejects_relative_interpreter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        launcher.write_launcher(str(tmp_path / "ketch-runc"), interpreter="python3")


def test_launcher_main_usage() -> None:
    assert launcher.main([]) == 2


def test_launcher_main_cli(tmp_path: Path) -> None:
    script = tmp_path / "ketch"
    assert launcher.main(["--cli", str(script)]) == 0
    assert "from ketch.cli.main import main" in script.read_text()


def test_launcher_collector_off_for_runtime_only() -> None:
    runtime_text = launcher.launcher_text(sys.executable, "/src")
    cli_text = launcher.launcher_text(sys.executable, "/src", entry=launcher.CLI_ENTRY)
    assert "gc.disable()" in runtime_text
    assert "gc.disable()" not in cli_text


def test_cli_argparse_verbs_enable_collector(capsys: pytest.CaptureFixture[str]) -> None:
    import gc

    from ketch.runtime import cli

    gc.disable()
    try:
        assert cli.main(["--version"]) == 0
        assert gc.isenabled()
    finally:
        gc.enable()
    assert capsys.readouterr().out.startswith("ketch-runc version")


def test_cli_launcher_runs_ketch(tmp_path: Path) -> None:
    script = tmp_path / "ketch"
    launcher.write_launcher(str(script), entry=launcher.CLI_ENTRY)
    completed = run_script(script, "--version")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ketch version")


def test_cli_launcher_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "ketch"
    launcher.write_launcher(str(script), entry=launcher.CLI_ENTRY)
    completed = run_script(script, "no-such-command")
    assert completed.returncode == 1
    assert "no-such-command" in completed.stderr


def write_stopped_record(state_root: Path, container_id: str) -> None:
    """Write the state of a container whose init is gone and whose cgroups are removed."""
    directory = state_root / container_id
    directory.mkdir()
    record = state.ContainerRecord(
        id=container_id,
        pid=0,
        init_start_time=0,
        bundle="/b",
        rootfs="/b/rootfs",
        created="",
        oci_version="1.0.2",
        cgroups={"directories": {}},
    )
    state.write_record(directory, record)


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter as the launcher does: -I -S, ketch on sys.path."""
    source = launcher.package_parent()
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {source!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# Modules that start, delete, kill and state must not import, because each costs
# milliseconds per call (os with _collections_abc and posixpath about 1.5 ms).
HEAVY_MODULES = (
    "json",
    "re",
    "enum",
    "contextlib",
    "pathlib",
    "logging",
    "typing",
    "signal",
    "os",
    "types",
)


@pytest.mark.parametrize("verb", [["start"], ["delete"], ["kill", "KILL"], ["state"]])
def test_short_verb_imports(tmp_path: Path, verb: list[str]) -> None:
    write_stopped_record(tmp_path, "web")
    code = (
        "from ketch.runtime.cli import main\n"
        f"main(['--root', {str(tmp_path)!r}, {verb[0]!r}, 'web', *{verb[1:]!r}])\n"
        f"print('imported:', *(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    completed = run_isolated(code)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "imported:"


def test_log_deferred_without_records(tmp_path: Path) -> None:
    write_stopped_record(tmp_path, "web")
    log = tmp_path / "log.json"
    completed = run_isolated(
        "from ketch.runtime.cli import main\n"
        f"status = main(['--root', {str(tmp_path)!r}, '--log', {str(log)!r}, "
        "'--log-format', 'json', 'delete', 'web'])\n"
        "print(status, 'logging' in sys.modules)\n"
    )
    assert completed.stdout == "0 False\n", completed.stderr
    assert log.exists()
    assert log.read_text() == ""


def test_log_deferred_warning_written(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    completed = run_isolated(
        "from types import SimpleNamespace\n"
        "from ketch.runtime import cli\n"
        "from ketch.runtime.lazylog import LazyLogger\n"
        f"arguments = SimpleNamespace(log={str(log)!r}, log_format='json', debug=False)\n"
        "cli._set_up_logging(arguments, defer=True)\n"
        "LazyLogger('ketch.runtime.hooks').warning('hook %s failed', 'poststop[0]')\n"
    )
    assert completed.returncode == 0, completed.stderr
    record = json.loads(log.read_text())
    assert record["level"] == "warning"
    assert record["msg"] == "hook poststop[0] failed"


def test_deferred_setup_runs_once() -> None:
    from ketch.runtime import lazylog

    calls: list[str] = []
    lazylog.defer_setup(lambda: calls.append("setup"))
    lazylog.run_deferred_setup()
    lazylog.run_deferred_setup()
    assert calls == ["setup"]


def test_deferred_setup_skipped_in_child(monkeypatch: pytest.MonkeyPatch) -> None:
    from ketch.runtime import lazylog

    calls: list[str] = []
    lazylog.defer_setup(lambda: calls.append("setup"))
    parent_pid = lazylog.posix.getpid()
    monkeypatch.setattr(lazylog.posix, "getpid", lambda: parent_pid + 1)
    lazylog.run_deferred_setup()
    monkeypatch.undo()
    assert calls == []
    lazylog.run_deferred_setup()
    assert calls == ["setup"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("term", 15), ("SIGCLD", 17), (10, 10)],
)
def test_parse_signal_accepts(text: str | int, expected: int) -> None:
    assert signals.parse_signal(text) == expected


@pytest.mark.parametrize("text", ["0", "65", "SIG_IGN", "IGN", "dfl", "block", "NSIG", "x", ""])
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(signals.InvalidArgument, match="invalid signal"):
        signals.parse_signal(text)


# Modules that create's path (the CLI, the library's create, the init) must not import.
CREATE_HEAVY_MODULES = (
    "json",
    "re",
    "enum",
    "pathlib",
    "fnmatch",
    "urllib.parse",
    "ipaddress",
    "collections",
    "functools",
    "contextlib",
    "signal",
    "socket",
    "selectors",
    "logging",
    "typing",
    "dataclasses",
    # Needed only with a terminal or a seccomp profile.
    "termios",
    "ketch.runtime.console",
    "ketch.runtime.seccomp",
    # Imported by the init after the fork, not by create's process before it.
    "ketch.runtime.init",
    "ketch.runtime.rootfs",
    "ketch.runtime.mounts",
    "ketch.runtime.process",
    "ketch.runtime.exechelper",
    "ketch.runtime.network",
)


def test_create_imports() -> None:
    completed = run_isolated(
        "from ketch.runtime import cli, cli_quick, create\n"
        f"print('imported:', *(m for m in {CREATE_HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "imported:"


CPU_LIST_PATTERN = r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*"
CPU_LISTS = ["0", "0-2", "0-2,4", "1,3,5-7", "10-1", "", ",", "0,", "-1", "0-", "0--2", "a"]


@pytest.mark.parametrize("text", [*CPU_LISTS, "0\n", "٣", "²", "0 ,1", "0-2-4"])
def test_is_cpu_list_matches_pattern(text: str) -> None:
    import re

    from ketch.runtime import config

    assert config.is_cpu_list(text) == bool(re.fullmatch(CPU_LIST_PATTERN, text))


@pytest.mark.parametrize("kind", ["seqpacket", "stream"])
def test_socket_pair_sends_descriptor(tmp_path: Path, kind: str) -> None:
    from ketch.runtime import sockets

    kinds = {"seqpacket": sockets.SOCK_SEQPACKET, "stream": sockets.SOCK_STREAM}
    sender, receiver = sockets.socket_pair(kinds[kind])
    path = tmp_path / "sent"
    path.write_text("content")
    fd = os.open(path, os.O_RDONLY)
    try:
        sockets.send_fds(sender, b"/dev/ptmx", [fd])
        data, fds, _, _ = socket.recv_fds(receiver, 1024, 1)  # type: ignore[arg-type]
    finally:
        os.close(fd)
        sender.close()
        receiver.close()
    assert data == b"/dev/ptmx"
    assert len(fds) == 1
    with os.fdopen(fds[0]) as received:
        assert received.read() == "content"


def test_all_signals_are_ints() -> None:
    numbers = signals.all_signals()
    assert signals.SIGKILL in numbers
    assert all(type(number) is int for number in numbers)


def test_seccomp_compile_imports() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    completed = run_isolated(
        "from ketch.runtime import create\n"
        f"assert create.compile_seccomp({profile!r}) is not None\n"
        "print('imported:', *(m for m in ('json', 're', 'enum', 'hashlib') if m in sys.modules))\n"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "imported:"
