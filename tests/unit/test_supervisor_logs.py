"""The json-file log writer and the RFC 3339 timestamps it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.supervisor.logs import MAX_ENTRY_BYTES, JsonFileLog, format_timestamp

# 2026-01-02T03:04:05 UTC
BASE_NS = 1_767_323_045 * 1_000_000_000


def read_entries(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("time_ns", "expected"),
    [
        (BASE_NS + 123_456_789, "2026-01-02T03:04:05.123456789Z"),
        (BASE_NS + 120_000_000, "2026-01-02T03:04:05.12Z"),
        (BASE_NS + 1, "2026-01-02T03:04:05.000000001Z"),
        (BASE_NS, "2026-01-02T03:04:05Z"),
    ],
)
def test_timestamp_like_go_rfc3339nano(time_ns: int, expected: str) -> None:
    assert format_timestamp(time_ns) == expected


def test_log_line_format(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stdout", b"hello\n", BASE_NS + 5)
    log.close()
    line = path.read_bytes()
    assert line == b'{"log":"hello\\n","stream":"stdout","time":"2026-01-02T03:04:05.000000005Z"}\n'


def test_log_splits_at_newlines(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stdout", b"one\ntwo\nthree\n", BASE_NS)
    log.close()
    assert [entry["log"] for entry in read_entries(path)] == ["one\n", "two\n", "three\n"]


def test_log_keeps_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stdout", b"hel", BASE_NS)
    assert path.read_bytes() == b""
    log.write("stdout", b"lo\nwor", BASE_NS)
    log.end_stream("stdout")
    log.close()
    assert [entry["log"] for entry in read_entries(path)] == ["hello\n", "wor"]


def test_log_streams_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stdout", b"out-", BASE_NS)
    log.write("stderr", b"err\n", BASE_NS)
    log.write("stdout", b"line\n", BASE_NS)
    log.close()
    entries = read_entries(path)
    assert [(e["stream"], e["log"]) for e in entries] == [
        ("stderr", "err\n"),
        ("stdout", "out-line\n"),
    ]


def test_log_close_flushes_partial(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stderr", b"no newline", BASE_NS)
    log.close()
    assert read_entries(path)[0]["log"] == "no newline"


def test_log_splits_long_line(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stdout", b"x" * (MAX_ENTRY_BYTES * 2 + 10) + b"\n", BASE_NS)
    log.close()
    sizes = [len(entry["log"]) for entry in read_entries(path)]
    assert sizes == [MAX_ENTRY_BYTES, MAX_ENTRY_BYTES, 11]


def test_log_replaces_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path)
    log.write("stdout", b"caf\xc3\xa9 \xff\n", BASE_NS)
    log.close()
    assert read_entries(path)[0]["log"] == "café \ufffd\n"


def test_log_appends_to_existing(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    for text in (b"first\n", b"second\n"):
        log = JsonFileLog(path)
        log.write("stdout", text, BASE_NS)
        log.close()
    assert [entry["log"] for entry in read_entries(path)] == ["first\n", "second\n"]


def test_log_refuses_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    path = tmp_path / "c-json.log"
    path.symlink_to(target)
    with pytest.raises(OSError):
        JsonFileLog(path)


def test_rotation_keeps_max_files(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    entry_size = len(b'{"log":"line 00\\n","stream":"stdout","time":"2026-01-02T03:04:05Z"}\n')
    log = JsonFileLog(path, max_size=entry_size * 2, max_files=3)
    for number in range(10):
        log.write("stdout", f"line {number:02d}\n".encode(), BASE_NS)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c-json.log", "c-json.log.1", "c-json.log.2"]


def test_rotation_keeps_newest_lines(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    entry_size = len(b'{"log":"line 00\\n","stream":"stdout","time":"2026-01-02T03:04:05Z"}\n')
    log = JsonFileLog(path, max_size=entry_size * 2, max_files=3)
    for number in range(10):
        log.write("stdout", f"line {number:02d}\n".encode(), BASE_NS)
    log.close()
    lines = []
    for name in ("c-json.log.2", "c-json.log.1", "c-json.log"):
        lines += [entry["log"] for entry in read_entries(tmp_path / name)]
    assert lines == [f"line {number:02d}\n" for number in range(4, 10)]


def test_rotation_file_never_exceeds_max_size(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path, max_size=300, max_files=2)
    log.write("stdout", b"".join(f"{n}\n".encode() for n in range(100)), BASE_NS)
    log.close()
    assert path.stat().st_size <= 300


def test_rotation_one_file_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonFileLog(path, max_size=200, max_files=1)
    for number in range(20):
        log.write("stderr", f"{number}\n".encode(), BASE_NS)
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["c-json.log"]
    assert read_entries(path)[-1]["log"] == "19\n"


def test_rotation_continues_existing_size(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    path.write_bytes(b"x" * 150 + b"\n")
    log = JsonFileLog(path, max_size=200, max_files=2)
    log.write("stdout", b"hello\n", BASE_NS)
    log.close()
    assert (tmp_path / "c-json.log.1").read_bytes() == b"x" * 150 + b"\n"
