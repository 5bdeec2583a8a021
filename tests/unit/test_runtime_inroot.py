"""Path resolution inside a rootfs: symlinks never lead out of it."""

from __future__ import annotations

import os

import pytest

from ketch.errors import SystemFailure
from ketch.runtime import inroot


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        yield root, fd
    finally:
        os.close(fd)


def _real(fd: int) -> str:
    return os.readlink(inroot.fd_path(fd))


def test_make_directories_creates(root):
    path, fd = root
    created_fd = inroot.make_directories(fd, "/a/b/c")
    try:
        assert _real(created_fd) == str(path / "a/b/c")
    finally:
        os.close(created_fd)


def test_absolute_symlink_stays_inside(root, tmp_path):
    path, fd = root
    outside = tmp_path / "outside"
    outside.mkdir()
    (path / "outside").mkdir()
    (path / "link").symlink_to("/outside")
    created_fd = inroot.make_directories(fd, "/link/new")
    try:
        assert _real(created_fd) == str(path / "outside/new")
    finally:
        os.close(created_fd)
    assert not (outside / "new").exists()


def test_dotdot_symlink_stays_inside(root, tmp_path):
    path, fd = root
    (path / "up").symlink_to("../../../..")
    opened = inroot.open_in_root(fd, "/up")
    try:
        assert _real(opened) == str(path)
    finally:
        os.close(opened)


def test_dotdot_in_path_clamped(root):
    path, fd = root
    assert inroot.relative_parts("/../../etc") == ["etc"]


def test_dangling_link_target_created_inside(root, tmp_path):
    path, fd = root
    host_only = tmp_path / "host-only"
    host_only.mkdir()
    (path / "dangling").symlink_to(host_only)
    created_fd = inroot.make_directories(fd, "/dangling/x")
    try:
        inside = path / str(host_only).lstrip("/") / "x"
        assert _real(created_fd) == str(inside)
    finally:
        os.close(created_fd)
    assert not (host_only / "x").exists()


def test_relative_link_clamped_at_root(root):
    path, fd = root
    (path / "up").symlink_to("../../../../made/here")
    created_fd = inroot.make_directories(fd, "/up/leaf")
    try:
        assert _real(created_fd) == str(path / "made/here/leaf")
    finally:
        os.close(created_fd)


def test_make_file_creates(root):
    path, fd = root
    created_fd = inroot.make_file(fd, "/etc/hosts")
    os.close(created_fd)
    assert (path / "etc/hosts").is_file()


def test_make_file_through_link_stays_inside(root, tmp_path):
    path, fd = root
    (path / "etc").mkdir()
    (path / "etc/resolv.conf").symlink_to("/run/resolv.conf")
    (tmp_path / "run").mkdir()
    created_fd = inroot.make_file(fd, "/etc/resolv.conf")
    os.close(created_fd)
    assert (path / "run/resolv.conf").is_file()
    assert not (tmp_path / "run/resolv.conf").exists()


def test_make_file_link_to_host_file_stays_inside(root, tmp_path):
    path, fd = root
    host_file = tmp_path / "host-file"
    (path / "target").symlink_to(host_file)
    created_fd = inroot.make_file(fd, "/target")
    os.close(created_fd)
    assert not host_file.exists()
    assert (path / str(host_file).lstrip("/")).is_file()


def test_link_loop_rejected(root):
    path, fd = root
    (path / "a").symlink_to("b")
    (path / "b").symlink_to("a")
    with pytest.raises(SystemFailure, match="too many symlinks"):
        inroot.make_directories(fd, "/a/x")


def test_file_component_not_directory(root):
    path, fd = root
    (path / "file").write_text("x")
    with pytest.raises(SystemFailure, match="not a directory"):
        inroot.make_directories(fd, "/file/sub")


def test_make_file_parents_searchable(root):
    path, fd = root
    os.close(inroot.make_file(fd, "/new/dir/file", mode=0o600))
    assert (path / "new/dir").stat().st_mode & 0o777 == 0o755
    assert (path / "new/dir/file").stat().st_mode & 0o777 == 0o600
