"""Reading json-file logs for the logs route, and the json-file log options."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

import pytest

from ketch.engine.logopts import check_log_opts, parse_size, rotation
from ketch.engine.logs import (
    LogQuery,
    parse_tail,
    parse_time_ns,
    parse_unix_time,
    read_log,
    rotated_files,
)
from ketch.errors import InvalidArgument
from ketch.supervisor.logs import JsonFileLog

# 2026-01-02T03:04:05 UTC
BASE_NS = 1_767_323_045 * 1_000_000_000
SECOND = 1_000_000_000


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while data:
        stream, length = struct.unpack(">BxxxI", data[:8])
        frames.append((stream, data[8 : 8 + length]))
        data = data[8 + length :]
    return frames


def write_log(path: Path, lines: list[tuple[str, str, int]], **rotation: int) -> None:
    log = JsonFileLog(path, **rotation)
    for stream, text, time_ns in lines:
        log.write(stream, text.encode(), time_ns)
    log.close()


def read(path: Path, query: LogQuery, running: bool = False) -> bytes:
    async def collect() -> bytes:
        return b"".join([piece async for piece in read_log(path, query, lambda: running)])

    return asyncio.run(collect())


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "c-json.log"
    write_log(
        path,
        [
            ("stdout", "one\n", BASE_NS),
            ("stderr", "two\n", BASE_NS + SECOND),
            ("stdout", "three\n", BASE_NS + 2 * SECOND),
        ],
    )
    return path


def test_logs_frames_both_streams(log_path: Path) -> None:
    frames = split_frames(read(log_path, LogQuery()))
    assert frames == [(1, b"one\n"), (2, b"two\n"), (1, b"three\n")]


def test_logs_stdout_only(log_path: Path) -> None:
    frames = split_frames(read(log_path, LogQuery(stderr=False)))
    assert frames == [(1, b"one\n"), (1, b"three\n")]


def test_logs_tail_two(log_path: Path) -> None:
    frames = split_frames(read(log_path, LogQuery(tail=2)))
    assert frames == [(2, b"two\n"), (1, b"three\n")]


def test_logs_tail_zero(log_path: Path) -> None:
    assert read(log_path, LogQuery(tail=0)) == b""


def test_logs_since_includes_equal_time(log_path: Path) -> None:
    frames = split_frames(read(log_path, LogQuery(since_ns=BASE_NS + SECOND)))
    assert [payload for _, payload in frames] == [b"two\n", b"three\n"]


def test_logs_until_includes_equal_time(log_path: Path) -> None:
    frames = split_frames(read(log_path, LogQuery(until_ns=BASE_NS + SECOND)))
    assert [payload for _, payload in frames] == [b"one\n", b"two\n"]


def test_logs_timestamps_prefix(log_path: Path) -> None:
    frames = split_frames(read(log_path, LogQuery(tail=1, timestamps=True)))
    assert frames == [(1, b"2026-01-02T03:04:07.000000000Z three\n")]


def test_logs_raw_for_tty(log_path: Path) -> None:
    assert read(log_path, LogQuery(raw=True)) == b"one\ntwo\nthree\n"


def test_logs_missing_file_is_empty(tmp_path: Path) -> None:
    assert read(tmp_path / "absent-json.log", LogQuery()) == b""


def test_logs_skip_cut_line(log_path: Path) -> None:
    with log_path.open("ab") as file:
        file.write(b'{"log":"cut')
    assert len(split_frames(read(log_path, LogQuery()))) == 3


def test_logs_read_rotated_files_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    lines = [("stdout", f"line {n:02d}\n", BASE_NS + n) for n in range(12)]
    write_log(path, lines, max_size=300, max_files=5)
    assert len(rotated_files(path)) > 1
    payloads = [payload for _, payload in split_frames(read(path, LogQuery()))]
    assert payloads[-1] == b"line 11\n"
    assert payloads == sorted(payloads)


def test_logs_tail_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    lines = [("stdout", f"line {n:02d}\n", BASE_NS + n) for n in range(12)]
    write_log(path, lines, max_size=200, max_files=10)
    payloads = [payload for _, payload in split_frames(read(path, LogQuery(tail=5)))]
    assert payloads == [f"line {n:02d}\n".encode() for n in range(7, 12)]


def test_logs_follow_ends_after_exit(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    writer = JsonFileLog(path, max_size=200, max_files=3)
    state = {"running": True}

    async def produce() -> None:
        for number in range(10):
            await asyncio.sleep(0.02)
            writer.write("stdout", f"n{number}\n".encode(), BASE_NS + number)
        writer.close()
        state["running"] = False

    async def follow() -> bytes:
        pieces = []
        producer = asyncio.ensure_future(produce())
        async for piece in read_log(path, LogQuery(follow=True), lambda: state["running"]):
            pieces.append(piece)
        await producer
        return b"".join(pieces)

    payloads = [payload for _, payload in split_frames(asyncio.run(follow()))]
    assert payloads == [f"n{number}\n".encode() for number in range(10)]


def test_logs_follow_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    writer = JsonFileLog(path, max_size=150, max_files=1)
    state = {"running": True}

    async def produce() -> None:
        for number in range(6):
            await asyncio.sleep(0.15)
            writer.write("stdout", f"n{number}\n".encode(), BASE_NS + number)
        writer.close()
        state["running"] = False

    async def follow() -> bytes:
        producer = asyncio.ensure_future(produce())
        query = LogQuery(follow=True)
        pieces = [piece async for piece in read_log(path, query, lambda: state["running"])]
        await producer
        return b"".join(pieces)

    payloads = [payload for _, payload in split_frames(asyncio.run(follow()))]
    assert payloads[-1] == b"n5\n"


def test_logs_follow_closes_file(log_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    read(log_path, LogQuery(follow=True), running=False)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767323045", BASE_NS),
        ("1767323045.5", BASE_NS + 500_000_000),
        ("1767323045.000000001", BASE_NS + 1),
    ],
)
def test_unix_time_parse(text: str, expected: int) -> None:
    assert parse_unix_time(text, "since") == expected


def test_unix_time_rejects_text() -> None:
    with pytest.raises(InvalidArgument, match="'since'"):
        parse_unix_time("yesterday", "since")


def test_tail_parse_all() -> None:
    assert parse_tail("all") == -1


def test_tail_rejects_negative() -> None:
    with pytest.raises(InvalidArgument, match="tail"):
        parse_tail("-3")


def test_time_parse_fraction() -> None:
    assert parse_time_ns("2026-01-02T03:04:05.12Z") == BASE_NS + 120_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10m", 10 << 20), ("512k", 512 << 10), ("1g", 1 << 30), ("100", 100), ("-1", 0)],
)
def test_log_size_parse(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_log_size_rejects_unit() -> None:
    with pytest.raises(InvalidArgument, match="max-size"):
        parse_size("10 parsecs")


def test_log_opts_reject_unknown() -> None:
    with pytest.raises(InvalidArgument, match="unknown log opt 'colour'"):
        check_log_opts({"colour": "red"}, "create body")


def test_log_opts_reject_max_file_without_size() -> None:
    with pytest.raises(InvalidArgument, match="max-file"):
        check_log_opts({"max-file": "3"}, "create body")


def test_log_opts_reject_zero_files() -> None:
    with pytest.raises(InvalidArgument, match="max-file"):
        check_log_opts({"max-size": "1m", "max-file": "0"}, "create body")


def test_log_opts_rotation() -> None:
    assert rotation({"max-size": "10m", "max-file": "3"}) == (10 << 20, 3)
