"""Base images: finding the Debian mirror in apt's sources, both file formats."""

from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.baseimage import find_debian_mirror

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mirror_from_deb822(tmp_path: Path) -> None:
    sources = write(tmp_path, "debian.sources", DEB822)
    assert find_debian_mirror("bookworm", [sources]) == "http://mirror.example/debian"


def test_mirror_for_security_suite(tmp_path: Path) -> None:
    sources = write(tmp_path, "debian.sources", DEB822)
    mirror = find_debian_mirror("bookworm-security", [sources])
    assert mirror == "http://mirror.example/debian-security"


def test_mirror_from_one_line_list(tmp_path: Path) -> None:
    text = "# comment\ndeb-src http://src.example/debian bookworm main\n" \
        "deb [arch=amd64 signed-by=/k.gpg] http://list.example/debian bookworm main\n"  # fmt: skip
    sources = write(tmp_path, "sources.list", text)
    assert find_debian_mirror("bookworm", [sources]) == "http://list.example/debian"


def test_first_file_wins(tmp_path: Path) -> None:
    first = write(tmp_path, "sources.list", "deb http://first.example/debian bookworm main\n")
    second = write(tmp_path, "debian.sources", DEB822)
    assert find_debian_mirror("bookworm", [first, second]) == "http://first.example/debian"


def test_missing_files_skipped(tmp_path: Path) -> None:
    sources = write(tmp_path, "debian.sources", DEB822)
    assert find_debian_mirror("bookworm", [tmp_path / "absent.list", sources])


def test_no_mirror_for_suite(tmp_path: Path) -> None:
    sources = write(tmp_path, "debian.sources", DEB822)
    with pytest.raises(InvalidArgument, match="no Debian mirror for 'trixie'.*--mirror"):
        find_debian_mirror("trixie", [sources])
