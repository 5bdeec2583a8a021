"""The cache of compiled seccomp programs that create and exec share in one process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ketch.runtime import create


def small_profile(errno_ret: int = 1) -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret},
        ],
    }


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    create._COMPILED_FILTERS.clear()
    yield
    create._COMPILED_FILTERS.clear()


def test_cache_returns_same_program() -> None:
    first = create.compile_seccomp(small_profile())
    assert create.compile_seccomp(small_profile()) is first


def test_cache_ignores_key_order() -> None:
    first = create.compile_seccomp(small_profile())
    reordered = dict(reversed(list(small_profile().items())))
    assert create.compile_seccomp(reordered) is first


def test_cache_tells_profiles_apart() -> None:
    first = create.compile_seccomp(small_profile(errno_ret=1))
    second = create.compile_seccomp(small_profile(errno_ret=2))
    assert second is not first
    assert second is not None
    assert first is not None
    assert second.program != first.program


def test_cache_drops_least_recent() -> None:
    oldest = create.compile_seccomp(small_profile(errno_ret=1))
    for errno_ret in range(2, create.MAX_COMPILED_FILTERS + 2):
        create.compile_seccomp(small_profile(errno_ret=errno_ret))
    assert len(create._COMPILED_FILTERS) == create.MAX_COMPILED_FILTERS
    assert create.compile_seccomp(small_profile(errno_ret=1)) is not oldest


def test_cache_keeps_recently_used() -> None:
    first = create.compile_seccomp(small_profile(errno_ret=1))
    for errno_ret in range(2, create.MAX_COMPILED_FILTERS + 2):
        create.compile_seccomp(small_profile(errno_ret=1))
        create.compile_seccomp(small_profile(errno_ret=errno_ret))
    assert create.compile_seccomp(small_profile(errno_ret=1)) is first


def test_cache_none_profile() -> None:
    assert create.compile_seccomp(None) is None
    assert create._COMPILED_FILTERS == {}
