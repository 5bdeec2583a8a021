"""The supervisor's start: its command line parsed without argparse in the usual forms, and
the modules the supervisor process leaves out to keep its memory small."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ketch.supervisor import __main__ as supervisor_main

PLAIN_FORMS = [
    [],
    ["--exec-root", "/run/x", "--detach"],
    ["--exec-root=/run/x", "--log-level", "debug", "--shutdown-timeout=2.5"],
    ["--detach", "--log-level=error", "--shutdown-timeout", "0", "--exec-root", "rel"],
]


@pytest.mark.parametrize("argv", PLAIN_FORMS)
def test_plain_forms_match_argparse(argv: list[str]) -> None:
    plain = supervisor_main._parse_plain_forms(argv)
    assert plain is not None
    assert plain == supervisor_main._parse_with_argparse(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--exec"],
        ["--exec-root"],
        ["--log-level", "loud"],
        ["--shutdown-timeout", "soon"],
        ["--shutdown-timeout", "-1"],
        ["--detach=yes"],
        ["extra"],
    ],
)
def test_other_forms_left_to_argparse(argv: list[str]) -> None:
    assert supervisor_main._parse_plain_forms(argv) is None


def test_invalid_level_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        supervisor_main.parse_arguments(["--log-level", "loud"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_supervisor_imports_exclude_heavy_modules() -> None:
    heavy = ("argparse", "dataclasses", "typing", "inspect", "shutil", "logging", "threading")
    code = (
        "import sys\n"
        "from ketch.supervisor import __main__ as main, plainlog, server\n"
        "arguments = main.parse_arguments(['--exec-root', '/run/x', '--detach'])\n"
        "plainlog.configure(arguments.log_level)\n"
        "plainlog.get_logger('ketch.supervisor.server').info('serving %s', 'x')\n"
        f"print(*(name for name in {heavy!r} if name in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "\n"
    assert completed.stderr.endswith(" INFO ketch.supervisor.server: serving x\n")


RECORD_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|ERROR|WARNING) "


def test_plain_log_records() -> None:
    code = (
        "from ketch.supervisor import plainlog\n"
        "from ketch.runtime.lazylog import LazyLogger\n"
        "plainlog.configure('info')\n"
        "log = plainlog.get_logger('ketch.supervisor.server')\n"
        "log.debug('dropped')\n"
        "log.info('container %s created, init pid %d', 'web', 12)\n"
        "log.log(plainlog.ERROR, 'request %s failed', 'r1')\n"
        "log.info('bad %d', 'x')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('failed to %s', 'divide')\n"
        "LazyLogger('ketch.runtime.hooks').warning('hook %s failed', 'poststop[0]')\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr

    lines = completed.stderr.splitlines()
    assert len(lines) == 8, completed.stderr
    for line in (lines[0], lines[1], lines[2], lines[3], lines[7]):
        assert re.match(RECORD_LINE, line), line

    assert lines[0].endswith(" INFO ketch.supervisor.server: container web created, init pid 12")
    assert lines[1].endswith(" ERROR ketch.supervisor.server: request r1 failed")
    assert lines[2].endswith(" INFO ketch.supervisor.server: bad %d ('x',)")
    assert lines[3].endswith(" ERROR ketch.supervisor.server: failed to divide")
    assert lines[4] == "Traceback (most recent call last):"
    assert lines[6] == "ZeroDivisionError: division by zero"
    assert lines[7].endswith(" WARNING ketch.runtime.hooks: hook poststop[0] failed")


def test_record_round_trip(tmp_path: Path) -> None:
    from ketch.supervisor.records import ContainerRecord, RecordStore

    store = RecordStore(tmp_path / "records")
    record = ContainerRecord("web", "/b", "/l", 12, status="stopped", exit_code=3)
    store.save(record)
    assert store.load_all() == [record]
    assert repr(record).startswith("ContainerRecord(id='web', bundle='/b'")


def test_main_fixes_mmap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        supervisor_main, "map_large_buffers_separately", lambda: calls.append("mallopt")
    )

    with pytest.raises(SystemExit):
        supervisor_main.main(["--help"])

    assert calls == ["mallopt"]


# Source of heap_kib(), which returns the resident size of glibc's main heap in KiB.
HEAP_KIB_CODE = (
    "def heap_kib():\n"
    "    total, in_heap = 0, False\n"
    "    for line in open('/proc/self/smaps'):\n"
    "        fields = line.split()\n"
    "        if not fields[0].endswith(':'):\n"
    "            in_heap = fields[-1] == '[heap]'\n"
    "        elif in_heap and fields[0] == 'Rss:':\n"
    "            total += int(fields[1])\n"
    "    return total\n"
)


def test_release_free_heap_returns_freed_pages() -> None:
    # The code frees 20000 blocks of 200 bytes, too large for glibc's fast bins. One block
    # above them stays allocated, so free() alone cannot shrink the heap.
    code = HEAP_KIB_CODE + (
        "import ctypes\n"
        "from ketch.supervisor.process import release_free_heap\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "blocks = [libc.malloc(200) for _ in range(20000)]\n"
        "kept = libc.malloc(200)\n"
        "for block in blocks:\n"
        "    libc.free(block)\n"
        "before = heap_kib()\n"
        "release_free_heap()\n"
        "print(before, heap_kib())\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr

    before, after = (int(field) for field in completed.stdout.split())
    assert before >= 4000, completed.stdout
    assert after <= before - 3000, completed.stdout
