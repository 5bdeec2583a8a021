"""The set-up's mount targets that commit and diff leave out of a container's layer."""

from __future__ import annotations

import io
import tarfile

from ketch.engine.init_paths import copy_without_init_paths, init_paths


def layer_tar(entries: dict[str, bytes | None]) -> io.BytesIO:
    """Return a layer tar with a directory for each None value and a file for the rest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries.items():
            member = tarfile.TarInfo(name)
            if content is None:
                member.type = tarfile.DIRTYPE
                member.mode = 0o755
                tar.addfile(member)
            else:
                member.size = len(content)
                member.pax_headers = {"SCHILY.xattr.user.origin": "test"}
                tar.addfile(member, io.BytesIO(content))
    buffer.seek(0)
    return buffer


def test_mount_targets_and_bare_etc_dropped() -> None:
    names = ["etc", "etc/hostname", "etc/hosts", "etc/resolv.conf"]
    assert init_paths(names) == set(names)


def test_etc_kept_with_other_changes() -> None:
    names = ["etc", "etc/hosts", "etc/motd"]
    assert init_paths(names) == {"etc/hosts"}


def test_etc_kept_with_whiteout() -> None:
    assert init_paths(["etc", "etc/.wh.motd"]) == set()


def test_dot_slash_names_dropped() -> None:
    assert init_paths(["./etc/", "./etc/resolv.conf"]) == {"etc", "etc/resolv.conf"}


def test_other_paths_kept() -> None:
    assert init_paths(["tmp", "tmp/hosts", "hosts"]) == set()


def test_copy_drops_mount_targets() -> None:
    source = layer_tar({"etc": None, "etc/hosts": b"", "root": None, "root/note": b"hello"})
    out = io.BytesIO()
    assert copy_without_init_paths(source, out)

    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert tar.getnames() == ["root", "root/note"]
        note = tar.getmember("root/note")
        assert note.pax_headers.get("SCHILY.xattr.user.origin") == "test"
        content = tar.extractfile(note)
        assert content is not None
        assert content.read() == b"hello"


def test_copy_skipped_without_targets() -> None:
    source = layer_tar({"root": None, "root/note": b"hello"})
    out = io.BytesIO()
    assert not copy_without_init_paths(source, out)
    assert out.getvalue() == b""
