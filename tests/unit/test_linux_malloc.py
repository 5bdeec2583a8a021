"""ketch.linux.malloc: glibc's mmap threshold, fixed in ketchd and the supervisor."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ketch.engine import daemon

# Script that prints the bytes that glibc's mmapped chunks grow by when a 300 KiB block
# is requested again after one of that size was freed. glibc raises its mmap threshold on
# that free unless the threshold was set, so the second block then comes from the heap
# (growth 0). With the argument "fixed", the code fixes the threshold first.
REALLOCATION_CODE = """
import ctypes
import sys

from ketch.linux.malloc import map_large_buffers_separately


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]


libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2

if sys.argv[1] == "fixed":
    print("set:", map_large_buffers_separately())
size = 300 * 1024
libc.free(libc.malloc(size))
before = libc.mallinfo2().hblkhd
block = libc.malloc(size)
print("mmapped growth:", libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


def mmapped_growth(mode: str) -> tuple[int, str]:
    completed = subprocess.run(
        [sys.executable, "-c", REALLOCATION_CODE, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    _, _, growth = completed.stdout.partition("mmapped growth:")
    return int(growth), completed.stdout


def test_fixed_threshold_maps_large_blocks() -> None:
    growth, output = mmapped_growth("fixed")

    assert "set: True" in output
    assert growth >= 300 * 1024, output


def test_default_threshold_reuses_heap() -> None:
    # Without the fix, glibc serves the second block from the heap.
    growth, output = mmapped_growth("default")

    assert growth == 0, output


def test_ketchd_main_fixes_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(daemon, "map_large_buffers_separately", lambda: calls.append("mallopt"))

    with pytest.raises(SystemExit):
        daemon.main(["--help"])

    assert calls == ["mallopt"]
