"""``Runtime.exec`` and ``ketch-runc exec``: another process in a running container."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from support.runtime_cli import Cli

pytest_plugins = ["support.rootfs"]

PATH_ENV = ["PATH=/bin"]


@pytest.fixture
def running(runner):
    """A started container running ``sleep 60``; returns its id."""
    container_id, _ = runner.create(["sleep", "60"], hostname="box")
    runner.runtime.start(container_id)
    return container_id


def _exec(runner, container_id: str, args: list[str], **process) -> tuple[int, str, str]:
    """Exec ``args`` in the container; return (status, stdout, stderr)."""
    from support.rootfs import read_until_closed

    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    document = {"args": args, "cwd": "/", "env": PATH_ENV, **process}
    try:
        pid = runner.runtime.exec(container_id, document, stdio=(0, out_write, err_write))
    finally:
        os.close(out_write)
        os.close(err_write)
    try:
        stdout, stderr = read_until_closed([out_read, err_read], 30)
    finally:
        os.close(out_read)
        os.close(err_read)
    return runner.wait(pid), stdout.decode(), stderr.decode()


def test_exec_output_and_status(runner, running):
    status, stdout, _ = _exec(runner, running, ["sh", "-c", "echo hi; exit 7"])
    assert stdout == "hi\n"
    assert status == 7


def test_exec_joins_pid_namespace(runner, running):
    _, stdout, _ = _exec(runner, running, ["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"])
    assert stdout == "sleep 60 "


def test_exec_joins_uts_namespace(runner, running):
    assert _exec(runner, running, ["hostname"])[1] == "box\n"


def test_exec_sees_container_root(runner, running):
    (runner.rootfs / "marker").write_text("inside")
    assert _exec(runner, running, ["cat", "/marker"])[1] == "inside"


def test_exec_in_cgroup_while_running(runner, running):
    out_read, out_write = os.pipe()
    try:
        pid = runner.runtime.exec(
            running,
            {"args": ["sleep", "30"], "cwd": "/", "env": PATH_ENV},
            stdio=(0, out_write, 2),
        )
    finally:
        os.close(out_write)
        os.close(out_read)
    try:
        for directory in runner.cgroup_directories(running):
            procs = (directory / "cgroup.procs").read_text().split()
            assert str(pid) in procs, directory
    finally:
        os.kill(pid, signal.SIGKILL)
        runner.wait(pid)


def test_exec_user_and_groups(runner, running):
    process = {"user": {"uid": 1000, "gid": 1000, "additionalGids": [2000]}}
    _, stdout, _ = _exec(runner, running, ["id"], **process)
    assert stdout.startswith("uid=1000(app) gid=1000(app) groups=")
    assert "2000(extra)" in stdout


def test_exec_cwd(runner, running):
    assert _exec(runner, running, ["pwd"], cwd="/tmp")[1] == "/tmp\n"


def test_exec_env_exact(runner, running):
    _, stdout, _ = _exec(runner, running, ["env"], env=["PATH=/bin", "A=1"])
    assert sorted(stdout.split()) == ["A=1", "HOME=/root", "PATH=/bin"]


def test_exec_umask(runner, running):
    assert _exec(runner, running, ["sh", "-c", "umask"], user={"umask": 0o077})[1] == "0077\n"


def test_exec_no_leaked_fds(runner, running, tmp_path):
    leaked = os.open(tmp_path, os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(leaked, True)
    try:
        _, stdout, _ = _exec(runner, running, ["ls", "/proc/self/fd"])
    finally:
        os.close(leaked)
    # 0, 1, 2 and the descriptor ls opens for the directory itself.
    assert stdout.split() == ["0", "1", "2", "3"]


def test_exec_exe_is_program(runner, running):
    # Until its exec, the child runs the host's Python binary. After it, /proc/self/exe
    # must lead to the container's program and nowhere else.
    _, stdout, _ = _exec(runner, running, ["readlink", "/proc/self/exe"])
    assert stdout == "/bin/busybox\n"


def test_exec_cwd_outside_root_rejected(runner, running, tmp_path):
    # CVE-2024-21626 kind: a cwd through a leaked descriptor of a host directory.
    leaked = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    try:
        with pytest.raises(Exception, match="outside the container's root|process.cwd"):
            _exec(runner, running, ["pwd"], cwd=f"/proc/self/fd/{leaked}")
    finally:
        os.close(leaked)


def test_exec_missing_executable(runner, running):
    with pytest.raises(NotFound, match="executable file not found"):
        _exec(runner, running, ["no-such-program"])


def test_exec_bad_process_names_field(runner, running):
    with pytest.raises(InvalidArgument, match="process.args"):
        runner.runtime.exec(running, {"args": [], "cwd": "/"})


def test_exec_unknown_container(runner):
    with pytest.raises(NotFound):
        runner.runtime.exec("nope", {"args": ["true"], "cwd": "/"})


def test_exec_stopped_container(runner):
    container_id, pid = runner.create(["true"])
    runner.runtime.start(container_id)
    runner.wait(pid)
    with pytest.raises(Conflict, match="stopped"):
        runner.runtime.exec(container_id, {"args": ["true"], "cwd": "/", "env": PATH_ENV})


def test_exec_failure_leaves_no_process(runner, running):
    before = set(_cgroup_pids(runner, running))
    with pytest.raises(NotFound):
        _exec(runner, running, ["no-such-program"])
    assert set(_cgroup_pids(runner, running)) == before


def _cgroup_pids(runner, container_id: str) -> list[str]:
    directory = runner.cgroup_directories(container_id)[0]
    return (directory / "cgroup.procs").read_text().split()


def test_exec_pid_file(runner, running, tmp_path):
    pid_file = tmp_path / "exec.pid"
    pid = runner.runtime.exec(
        running, {"args": ["true"], "cwd": "/", "env": PATH_ENV}, pid_file=pid_file
    )
    assert runner.wait(pid) == 0
    assert int(pid_file.read_text()) == pid


# The exec verb of ketch-runc.


@pytest.fixture
def cli(runner):
    return Cli(runner)


def test_cli_exec_status_and_output(cli, runner, running):
    result = cli("exec", running, "sh", "-c", "echo $0 out; exit 3")
    assert result.stdout == "sh out\n"
    assert result.returncode == 3


def test_cli_exec_options(cli, runner, running):
    result = cli(
        "exec", "--cwd", "/tmp", "--env", "A=2", "--user", "1000:1000", running,
        "sh", "-c", "echo $(pwd) $A $(id -u):$(id -g)",
    )  # fmt: skip
    assert result.stdout == "/tmp 2 1000:1000\n"


def test_cli_exec_process_file(cli, runner, running, tmp_path):
    process_file = tmp_path / "process.json"
    process_file.write_text(
        json.dumps({"args": ["echo", "from-file"], "cwd": "/", "env": PATH_ENV})
    )
    result = cli("exec", "--process", str(process_file), running)
    assert result.stdout == "from-file\n"


def test_cli_exec_detach_pid_file(cli, runner, running, tmp_path):
    pid_file = tmp_path / "pid"
    result = cli("exec", "--detach", "--pid-file", str(pid_file), running, "sleep", "30")
    assert result.returncode == 0
    pid = int(pid_file.read_text())
    try:
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0030\x00"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_cli_exec_cap_added(cli, runner, running):
    result = cli("exec", "--cap", "CAP_SYS_ADMIN", running, "grep", "CapEff", "/proc/self/status")
    effective = int(result.stdout.split()[1], 16)
    assert effective & (1 << 21)


def test_cli_exec_unknown_error(cli):
    result = cli("exec", "missing", "true")
    assert result.returncode == 1
    assert result.stderr == "ketch-runc: container missing does not exist\n"


def test_exec_terminal_console_socket(runner, running, tmp_path):
    from ketch.runtime import console

    path = tmp_path / "console.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        process = {
            "args": ["sh", "-c", "tty; [ -t 0 ] && echo interactive"],
            "cwd": "/",
            "env": PATH_ENV,
            "terminal": True,
        }
        pid = runner.runtime.exec(running, process, console_socket=path)
        master = console.receive_master(listener)
    try:
        output = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the process's side is closed
                break
            if not data:
                break
            output += data
    finally:
        os.close(master)
    assert runner.wait(pid) == 0
    # The init's devpts instance gave the init no terminal, so the exec gets pts 0.
    assert output.decode().splitlines()[1] == "interactive"
    assert output.decode().startswith("/dev/pts/")


def test_exec_terminal_without_socket_rejected(runner, running):
    process = {"args": ["true"], "cwd": "/", "env": PATH_ENV, "terminal": True}
    with pytest.raises(InvalidArgument, match="console socket"):
        runner.runtime.exec(running, process)


def test_exec_paused_conflict(runner, running):
    runner.runtime.pause(running)
    try:
        with pytest.raises(Conflict, match="paused"):
            runner.runtime.exec(running, {"args": ["true"], "cwd": "/", "env": PATH_ENV})
    finally:
        runner.runtime.resume(running)


def test_cli_exec_tty(cli, runner, running):
    # Without --detach, exec keeps the terminal and copies it to its own stdout. The
    # pty's \r\n reads back as \n, because Cli reads its output file in text mode.
    result = cli("exec", "--tty", running, "sh", "-c", "[ -t 1 ] && echo on-a-tty")
    assert result.stdout == "on-a-tty\n"
    assert result.returncode == 0


def test_exec_proc_self_exe_script_gets_helper(runner, running):
    # CVE-2019-5736 kind, through exec: a script whose interpreter is /proc/self/exe is
    # interpreted by whatever binary execs it, which must be the sealed helper and not
    # the host's Python that the exec'd process ran before its exec.
    import hashlib
    import sys

    host_python = Path(os.path.realpath(sys.executable))
    before = hashlib.sha256(host_python.read_bytes()).hexdigest()
    evil = runner.rootfs / "evil"
    evil.write_text('#!/proc/self/exe\nopen("/pwned", "w").write("x")\n')
    evil.chmod(0o755)
    status, _, stderr = _exec(runner, running, ["/evil"])
    assert status == 126
    assert "/memfd:ketch-runc-exec" in stderr
    assert not (runner.rootfs / "pwned").exists()
    assert hashlib.sha256(host_python.read_bytes()).hexdigest() == before


def test_exec_preserve_fds(runner, running, tmp_path):
    shared = tmp_path / "shared"
    shared.write_text("passed on\n")
    out_read, out_write = os.pipe()
    handle = os.open(shared, os.O_RDONLY)
    try:
        saved = os.dup(3)  # whatever the test process has at 3, put back afterwards
    except OSError:
        saved = -1
    try:
        os.dup2(handle, 3)
        pid = runner.runtime.exec(
            running,
            {"args": ["sh", "-c", "cat <&3"], "cwd": "/", "env": PATH_ENV},
            stdio=(0, out_write, 2),
            preserve_fds=1,
        )
    finally:
        if saved >= 0:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        os.close(handle)
        os.close(out_write)
    with os.fdopen(out_read) as output:
        text = output.read()
    assert runner.wait(pid) == 0
    assert text == "passed on\n"
