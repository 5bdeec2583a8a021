"""Exit statuses and output of the ``ketch`` CLI that must match the docker CLI 28, run in
a subprocess against the API server with a fake engine."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_ketch
from support.fake_engine import ServedEngine, serve_fake_engine


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    directory = Path(tempfile.mkdtemp(prefix="ketch-cli-", dir="/tmp"))
    try:
        with serve_fake_engine(directory / "api.sock") as served:
            served.engine.add_image("busybox:latest")
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    "flags",
    [("-d", "-a", "stdout"), ("-it", "-d", "--attach", "stdout"), ("-a", "stderr", "--detach")],
)
def test_run_attach_with_detach_rejected(served: ServedEngine, flags: tuple[str, ...]) -> None:
    result = run_ketch("run", *flags, "busybox", "true", host=served.host)
    assert result.returncode == 1
    assert result.stderr == "conflicting options: cannot specify both --attach and --detach\n"
    assert result.stdout == ""
    assert served.engine.containers == {}
