"""User resolution: docker's --user forms against a rootfs's passwd and group files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.engine.userdb import (
    ExecUser,
    read_file_in_root,
    resolve_user,
    resolve_user_in_rootfs,
)
from ketch.errors import InvalidArgument

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# comment
broken line
alice:x:1000:1000:Alice:/home/alice:/bin/sh
"""
GROUP = """root:x:0:
wheel:x:10:alice,bob
staff:x:50:alice
alice:x:1000:
"""


def test_user_empty_is_root() -> None:
    assert resolve_user("", PASSWD, GROUP) == ExecUser(0, 0, [], "/root")


def test_user_by_name() -> None:
    assert resolve_user("alice", PASSWD, GROUP) == ExecUser(1000, 1000, [10, 50], "/home/alice")


def test_user_numeric_known() -> None:
    assert resolve_user("1", PASSWD, GROUP) == ExecUser(1, 1, [], "/usr/sbin")


def test_user_numeric_unknown() -> None:
    assert resolve_user("4242", PASSWD, GROUP) == ExecUser(4242, 0, [], "/")


def test_user_numeric_with_gid() -> None:
    assert resolve_user("4242:77", PASSWD, GROUP) == ExecUser(4242, 77, [], "/")


def test_user_name_with_group_name() -> None:
    user = resolve_user("alice:staff", PASSWD, GROUP)
    assert user.gid == 50


def test_user_unknown_name() -> None:
    with pytest.raises(InvalidArgument, match="unable to find user nobody2: no matching entries"):
        resolve_user("nobody2", PASSWD, GROUP)


def test_user_unknown_group() -> None:
    with pytest.raises(InvalidArgument, match="unable to find group nogroup: no matching"):
        resolve_user("alice:nogroup", PASSWD, GROUP)


def test_user_name_without_passwd_file() -> None:
    with pytest.raises(InvalidArgument, match="unable to find user alice"):
        resolve_user("alice", None, None)


def test_user_uid_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match="out of range"):
        resolve_user("4294967296", PASSWD, GROUP)


def make_rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text(PASSWD)
    (rootfs / "etc" / "group").write_text(GROUP)
    return rootfs


def test_rootfs_user_resolved(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    assert resolve_user_in_rootfs("alice", rootfs).uid == 1000


def test_rootfs_absolute_symlink_stays_inside(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    outside = tmp_path / "outside-passwd"
    outside.write_text("alice:x:7:7::/evil:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(outside)
    # The link's target is resolved inside the rootfs, where it does not exist.
    assert read_file_in_root(rootfs, "etc/passwd") is None


def test_rootfs_symlink_followed_inside(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "etc" / "passwd").rename(rootfs / "real-passwd")
    (rootfs / "etc" / "passwd").symlink_to("/real-passwd")
    assert read_file_in_root(rootfs, "etc/passwd") == PASSWD


def test_rootfs_dotdot_symlink_stops_at_top(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "secret").write_text("host secret")
    (rootfs / "etc" / "link").symlink_to("../../../etc/secret")
    assert read_file_in_root(rootfs, "etc/link") is None


def test_rootfs_symlinked_directory_stays_inside(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (host_etc / "passwd").write_text("root:x:0:0::/host:/bin/sh\n")
    (rootfs / "etc").symlink_to(host_etc)
    assert read_file_in_root(rootfs, "etc/passwd") is None


def test_rootfs_fifo_rejected(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        read_file_in_root(rootfs, "etc/passwd")


def test_rootfs_symlink_loop(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        read_file_in_root(rootfs, "etc/passwd")


def test_rootfs_file_too_large(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "etc" / "passwd").write_text("x" * 100)
    with pytest.raises(InvalidArgument, match="larger than 10 bytes"):
        read_file_in_root(rootfs, "etc/passwd", max_bytes=10)


def test_rootfs_missing_passwd_numeric_user(tmp_path: Path) -> None:
    rootfs = tmp_path / "empty"
    rootfs.mkdir()
    assert resolve_user_in_rootfs("10:20", rootfs) == ExecUser(10, 20, [], "/")
