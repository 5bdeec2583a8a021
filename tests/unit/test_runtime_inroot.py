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


def test_dangling_symlink_rejected(root, tmp_path):
    path, fd = root
    (path / "dangling").symlink_to(tmp_path / "host-only")
    (tmp_path / "host-only").mkdir()
    with pytest.raises(SystemFailure, match="does not exist inside the rootfs"):
        inroot.make_directories(fd, "/dangling/x")
    assert not (tmp_path / "host-only/x").exists()


def test_make_file_creates(root):
    path, fd = root
    created_fd = inroot.make_file(fd, "/etc/hosts")
    os.close(created_fd)
    assert (path / "etc/hosts").is_file()


def test_make_file_symlink_out_rejected(root, tmp_path):
    path, fd = root
    (path / "target").symlink_to(tmp_path / "host-file")
    with pytest.raises(SystemFailure):
        inroot.make_file(fd, "/target")
    assert not (tmp_path / "host-file").exists()


def test_file_component_not_directory(root):
    path, fd = root
    (path / "file").write_text("x")
    with pytest.raises(OSError):
        inroot.make_directories(fd, "/file/sub")
