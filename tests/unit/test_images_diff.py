"""Layer diffs of a full copy against its parent tree, checked by applying them back."""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from ketch.errors import NotFound
from ketch.images.diff import diff_trees
from ketch.images.layers import WhiteoutForm, unpack_layer
from support.images import Dir, File, Symlink, layer_tar

LAYER = "sha256:" + "c" * 64
BASE = {
    "etc/": Dir(),
    "etc/hosts": File(b"127.0.0.1 localhost\n"),
    "etc/old.conf": File(b"old"),
    "var/cache/": Dir(),
    "var/cache/a": File(b"a"),
    "bin/sh": Symlink("busybox"),
}


def unpack_tree(tmp_path: Path, name: str, tar: bytes, root: Path | None = None) -> Path:
    blob = tmp_path / f"{name}.tar"
    blob.write_bytes(tar)
    if root is None:
        root = tmp_path / name
        root.mkdir()
    unpack_layer(blob, root, layer=LAYER, whiteouts=WhiteoutForm.APPLY)
    return root


def copy_tree(source: Path, destination: Path) -> Path:
    subprocess.run(["cp", "-a", f"{source}/.", str(destination)], check=True)
    return destination


def snapshot_of(root: Path) -> dict[str, tuple]:
    """Return what a test compares for every path below ``root``."""
    result = {}
    for directory, names, files, _ in os.fwalk(root):
        for name in names + files:
            path = Path(directory) / name
            info = os.lstat(path)
            content = os.readlink(path) if path.is_symlink() else None
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
            result[str(path.relative_to(root))] = (info.st_mode, content)
    return result


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    lower = unpack_tree(tmp_path, "lower", layer_tar(BASE))
    upper = tmp_path / "upper"
    upper.mkdir()
    return lower, copy_tree(lower, upper)


def diff_names(lower: Path, upper: Path) -> list[str]:
    out = io.BytesIO()
    diff_trees(lower, upper, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        return archive.getnames()


def test_unchanged_copy_empty_diff(trees: tuple[Path, Path]) -> None:
    assert diff_names(*trees) == []


def test_removed_file_whiteout(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "etc" / "old.conf").unlink()
    assert diff_names(lower, upper) == ["etc", "etc/.wh.old.conf"]


def test_removed_directory_one_whiteout(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    subprocess.run(["rm", "-r", str(upper / "var" / "cache")], check=True)
    assert diff_names(lower, upper) == ["var", "var/.wh.cache"]


def test_new_and_changed_files(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "etc" / "hosts").write_text("changed\n")
    (upper / "srv").mkdir()
    (upper / "srv" / "new").write_text("new")
    assert sorted(diff_names(lower, upper)) == ["etc", "etc/hosts", "srv", "srv/new"]


def test_mode_change_written(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    os.chmod(upper / "var" / "cache" / "a", 0o600)
    assert diff_names(lower, upper) == ["var", "var/cache", "var/cache/a"]


def test_hard_links_kept(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "one").write_text("x")
    os.link(upper / "one", upper / "two")
    out = io.BytesIO()
    diff_trees(lower, upper, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        assert archive.getmember("two").islnk()


def test_diff_applies_back(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "etc" / "old.conf").unlink()
    (upper / "etc" / "hosts").write_text("changed\n")
    subprocess.run(["rm", "-r", str(upper / "var" / "cache")], check=True)
    (upper / "var" / "cache").mkdir()
    (upper / "var" / "cache" / "b").write_text("b")
    (upper / "bin" / "sh").unlink()
    (upper / "bin" / "sh").symlink_to("dash")
    out = io.BytesIO()
    diff_trees(lower, upper, out)

    replay = tmp_path / "replay"
    replay.mkdir()
    copy_tree(lower, replay)
    unpack_tree(tmp_path, "diff", out.getvalue(), root=replay)
    assert snapshot_of(replay) == snapshot_of(upper)


def test_diff_id_is_digest(trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "new").write_text("n")
    out = io.BytesIO()
    result = diff_trees(lower, upper, out)
    assert result.size == len(out.getvalue())
    assert result.diff_id.startswith("sha256:")


def test_same_changes_same_diff_id(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    lower, upper = trees
    (upper / "new").write_text("n")
    first = diff_trees(lower, upper, io.BytesIO())
    second = diff_trees(lower, upper, io.BytesIO())
    assert first.diff_id == second.diff_id


def test_missing_upper_rejected(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    with pytest.raises(NotFound, match="not a directory"):
        diff_trees(trees[0], tmp_path / "absent", io.BytesIO())
