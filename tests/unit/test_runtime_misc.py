"""Signal parsing, mount options, container ids, state records and executable lookup."""

from __future__ import annotations

import os
import signal

import pytest

from ketch.errors import Forbidden, InvalidArgument, NotFound
from ketch.linux import syscalls as sc
from ketch.runtime import rootfs, state
from ketch.runtime.mounts import parse_options
from ketch.runtime.process import find_executable
from ketch.runtime.signals import parse_signal


@pytest.mark.parametrize("text", ["9", "KILL", "SIGKILL", "kill", "sigkill"])
def test_signal_forms(text):
    assert parse_signal(text) == signal.SIGKILL


@pytest.mark.parametrize("text", ["0", "NOPE", "999", "SIG", ""])
def test_signal_invalid(text):
    with pytest.raises(InvalidArgument):
        parse_signal(text)


def test_mount_flags():
    options = parse_options(["nosuid", "noexec", "ro", "mode=755", "size=65536k"])
    assert options.flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_RDONLY
    assert options.data == "mode=755,size=65536k"


def test_mount_later_option_wins():
    assert parse_options(["ro", "rw"]).flags == 0


def test_mount_propagation_separate():
    options = parse_options(["rbind", "rprivate"])
    assert options.flags == sc.MS_BIND | sc.MS_REC
    assert options.propagation == [sc.MS_PRIVATE | sc.MS_REC]


@pytest.mark.parametrize("container_id", ["web", "a.b-c_d+1", "0" * 64])
def test_valid_ids(container_id):
    state.validate_id(container_id)


@pytest.mark.parametrize("container_id", ["", "..", "a/b", "a b", "x\n"])
def test_invalid_ids(container_id):
    with pytest.raises(InvalidArgument):
        state.validate_id(container_id)


def test_own_start_time():
    assert state.process_start_time(os.getpid()) is not None


def test_start_time_missing_process():
    assert state.process_start_time(2**22 + 1) is None


def test_oci_state_stopped_pid_zero():
    record = state.ContainerRecord("x", 5, 1, "/b", "/b/rootfs", "t", "1.0.2")
    assert record.to_oci_state("stopped")["pid"] == 0


def test_record_round_trip(tmp_path):
    record = state.ContainerRecord("x", 5, 1, "/b", "/b/rootfs", "t", "1.0.2")
    (tmp_path / "x").mkdir()
    state.write_record(tmp_path / "x", record)
    assert state.read_record(tmp_path, "x") == record


def test_status_stopped_dead_init(tmp_path):
    record = state.ContainerRecord("x", 2**22 + 1, 1, "/b", "/b/rootfs", "t", "1.0.2")
    assert state.status_of(tmp_path, record) == "stopped"


def test_lookup_in_path(tmp_path):
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert find_executable("prog", [f"PATH=/nonexistent:{tmp_path}"]) == str(program)


def test_lookup_not_found_wording():
    with pytest.raises(NotFound) as raised:
        find_executable("no-such-prog", ["PATH=/bin"])
    assert str(raised.value) == 'exec: "no-such-prog": executable file not found in $PATH'


def test_lookup_without_path_env():
    with pytest.raises(NotFound, match="executable file not found"):
        find_executable("sh", [])


def test_lookup_absolute_missing():
    with pytest.raises(NotFound, match="no such file or directory"):
        find_executable("/no/such", [])


def test_lookup_directory_forbidden(tmp_path):
    with pytest.raises(Forbidden, match="is a directory"):
        find_executable(str(tmp_path), [])


def test_lookup_not_executable_forbidden(tmp_path):
    data = tmp_path / "data"
    data.write_text("x")
    data.chmod(0o644)
    with pytest.raises(Forbidden, match="permission denied"):
        find_executable(str(data), [])


MOUNTS = [
    ("/", ["shared:1"]),
    ("/var", []),
    ("/var/lib/ketch", ["shared:7"]),
    ("/var/lib/ketchup", []),
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/var/lib/ketch/rootfs", "/var/lib/ketch"),
        ("/var/lib/ketch", "/var/lib/ketch"),
        ("/var/lib/ketchup/rootfs", "/var/lib/ketchup"),
        ("/var/lib/other", "/var"),
        ("/tmp/rootfs", "/"),
    ],
)
def test_mount_point_of(path, expected):
    assert rootfs._mount_point_of(path, MOUNTS) == expected


def test_is_shared_reads_tags():
    assert rootfs._is_shared("/var/lib/ketch", MOUNTS)


def test_is_shared_private_mount():
    assert not rootfs._is_shared("/var/lib/ketchup", MOUNTS)
