"""The exec helper: its ELF file, its seals, and what it does when run."""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import struct
import subprocess

import pytest

from ketch.errors import SystemFailure
from ketch.runtime import exechelper


@pytest.fixture
def helper_fd():
    # These tests run the helper natively, so they need this machine's helper.
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no exec helper for {platform.machine()}")
    fd = exechelper.sealed_helper_fd()
    try:
        yield fd
    finally:
        os.close(fd)


def _run(helper_fd: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        executable=f"/proc/self/fd/{helper_fd}",
        pass_fds=[helper_fd],
        capture_output=True,
        text=True,
        env={"GREETING": "hi"},
        timeout=10,
    )


def test_elf_header():
    program = exechelper.helper_program("x86_64")
    assert program[:4] == b"\x7fELF"
    machine = struct.unpack_from("<H", program, 18)[0]
    assert machine == 62


def test_entry_inside_file():
    program = exechelper.helper_program("x86_64")
    entry = struct.unpack_from("<Q", program, 24)[0]
    assert 0x400000 < entry < 0x400000 + len(program)


def test_all_seals_set(helper_fd):
    seals = fcntl.fcntl(helper_fd, fcntl.F_GET_SEALS)
    expected = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    assert seals & expected == expected


def test_write_rejected(helper_fd):
    with pytest.raises(PermissionError):
        os.pwrite(helper_fd, b"x", 0)


def test_truncate_rejected(helper_fd):
    with pytest.raises(PermissionError):
        os.ftruncate(helper_fd, 0)


def test_reopened_for_write_rejected(helper_fd):
    # As a container process would reach it, through /proc/<pid>/exe.
    writable = os.open(f"/proc/self/fd/{helper_fd}", os.O_WRONLY)
    try:
        with pytest.raises(PermissionError):
            os.write(writable, b"x")
    finally:
        os.close(writable)


def test_execs_with_given_argv0(helper_fd):
    result = _run(helper_fd, [exechelper.MARKER, "/bin/sh", "custom-name", "-c", "echo $0"])
    assert result.stdout == "custom-name\n"


def test_passes_environment(helper_fd):
    result = _run(helper_fd, [exechelper.MARKER, "/bin/sh", "sh", "-c", "echo $GREETING"])
    assert result.stdout == "hi\n"


def test_missing_program_127(helper_fd):
    result = _run(helper_fd, [exechelper.MARKER, "/no/such/file", "x"])
    assert result.returncode == 127
    assert result.stderr == "ketch-runc: exec /no/such/file failed: errno 2\n"


def test_not_executable_126(helper_fd, tmp_path):
    target = tmp_path / "data"
    target.write_text("data")
    result = _run(helper_fd, [exechelper.MARKER, str(target), "x"])
    assert result.returncode == 126
    assert "errno 13" in result.stderr


def test_without_marker_rejected(helper_fd):
    result = _run(helper_fd, ["/proc/self/exe", "/bin/true", "true"])
    assert result.returncode == 126
    assert "/memfd:ketch-runc-exec" in result.stderr


def test_too_few_arguments_rejected(helper_fd):
    result = _run(helper_fd, [exechelper.MARKER, "/bin/true"])
    assert result.returncode == 126


AARCH64_QEMU = shutil.which("qemu-aarch64-static")


@pytest.fixture
def aarch64_helper(tmp_path):
    if AARCH64_QEMU is None:
        pytest.skip("qemu-aarch64-static is not installed")
    path = tmp_path / "helper-aarch64"
    path.write_bytes(exechelper.helper_program("aarch64"))
    path.chmod(0o755)
    return path


def _run_aarch64(helper, argv0: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    # qemu runs the helper, and the program it execs is this machine's and runs natively.
    return subprocess.run(
        [AARCH64_QEMU, "-0", argv0, str(helper), *args],
        capture_output=True,
        text=True,
        env={"GREETING": "hi"},
        timeout=10,
    )


def test_aarch64_elf_machine():
    program = exechelper.helper_program("aarch64")
    assert struct.unpack_from("<H", program, 18)[0] == 183


def test_aarch64_execs_with_given_argv0(aarch64_helper):
    result = _run_aarch64(aarch64_helper, exechelper.MARKER, ["/bin/sh", "named", "-c", "echo $0"])
    assert result.stdout == "named\n"


def test_aarch64_passes_environment(aarch64_helper):
    result = _run_aarch64(
        aarch64_helper, exechelper.MARKER, ["/bin/sh", "sh", "-c", "echo $GREETING"]
    )
    assert result.stdout == "hi\n"


def test_aarch64_missing_program_127(aarch64_helper):
    result = _run_aarch64(aarch64_helper, exechelper.MARKER, ["/no/such/file", "x"])
    assert result.returncode == 127
    assert result.stderr == "ketch-runc: exec /no/such/file failed: errno 2\n"


def test_aarch64_without_marker_rejected(aarch64_helper):
    result = _run_aarch64(aarch64_helper, "/proc/self/exe", ["/bin/true", "true"])
    assert result.returncode == 126
    assert "was not started by the runtime" in result.stderr


def test_unknown_machine_rejected():
    with pytest.raises(SystemFailure, match="riscv64"):
        exechelper.helper_program("riscv64")
