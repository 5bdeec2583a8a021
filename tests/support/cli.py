"""Run the ``ketch`` CLI in a subprocess, as a user would, and capture what it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.fake_docker import FakeDocker, serve_fake_docker
from support.fake_engine import ServedEngine, serve_fake_engine


def run_ketch(
    *args: str,
    host: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ketch.cli.main [-H host] args...`` with KETCH_HOST unset, and
    ``input`` (if given) on its stdin."""
    environment = {key: value for key, value in os.environ.items() if key != "KETCH_HOST"}
    environment.update(env or {})
    command = [sys.executable, "-m", "ketch.cli.main"]
    if host is not None:
        command += ["-H", host]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        input=input,
    )


@contextmanager
def served_engine(image: str | None = "busybox:latest") -> Iterator[ServedEngine]:
    """Serve a fake engine on a socket in a new directory under /tmp, with ``image`` added.

    The directory is short because unix socket paths are limited to 108 bytes.
    """
    directory = Path(tempfile.mkdtemp(prefix="ketch-cli-", dir="/tmp"))
    try:
        with serve_fake_engine(directory / "api.sock") as served:
            if image is not None:
                served.engine.add_image(image)
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def served_fake_docker() -> Iterator[FakeDocker]:
    """Serve a scripted Engine API on a socket in a new directory under /tmp."""
    directory = Path(tempfile.mkdtemp(prefix="ketch-cli-", dir="/tmp"))
    try:
        with serve_fake_docker(directory / "api.sock") as served:
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)
