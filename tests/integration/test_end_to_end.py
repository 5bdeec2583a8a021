"""`ketch run` and `docker run` against a real ketchd, end to end.

One ketchd per module runs in a network namespace of its own, with a real registry that
contains busybox (made by the project's base-image script) configured as its docker.io mirror.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest

from support.daemon import KetchDaemon
from support.images import Dir, File, Symlink, Whiteout, gzip_layer, image_config, push_test_image
from support.netns import entered


def test_run_echo_prints_hello(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "busybox", "echo", "hello")
    assert result.stdout == "hello\n", result.stderr
    assert result.returncode == 0


def test_run_exit_code_is_propagated(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr


def test_run_rm_leaves_no_container(daemon: KetchDaemon) -> None:
    daemon.ketch("run", "--rm", "--name", "gone-after-run", "busybox", "true")
    listing = daemon.ketch("ps", "-a")
    assert "gone-after-run" not in listing.stdout


def test_run_env_and_network_none(daemon: KetchDaemon) -> None:
    result = daemon.ketch(
        "run", "--rm", "--network", "none", "-e", "GREETING=hi there", "busybox",
        "sh", "-c", 'echo "$GREETING"; ls /sys/class/net',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hi there", "lo"]


def test_run_detached_then_ps_and_rm(daemon: KetchDaemon) -> None:
    started = daemon.ketch("run", "-d", "--name", "sleeper", "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    assert len(container_id) == 64
    listing = daemon.ketch("ps")
    assert "sleeper" in listing.stdout
    removed = daemon.ketch("rm", "-f", "sleeper")
    assert removed.returncode == 0, removed.stderr
    assert "sleeper" not in daemon.ketch("ps", "-a").stdout


def test_pull_and_images_list_busybox(daemon: KetchDaemon) -> None:
    pulled = daemon.ketch("pull", "busybox")
    assert pulled.returncode == 0, pulled.stderr
    images = daemon.ketch("images")
    assert "busybox" in images.stdout


def test_pull_applies_whiteout_of_later_layer(daemon: KetchDaemon) -> None:
    busybox = Path("/bin/busybox").read_bytes()
    base = gzip_layer({
        "bin/": Dir(),
        "bin/busybox": File(busybox, mode=0o755),
        "bin/sh": Symlink("busybox"),
        "bin/ls": Symlink("busybox"),
        "data/": Dir(),
        "data/kept": File(b"kept\n"),
        "data/removed": File(b"removed\n"),
    })  # fmt: skip
    top = gzip_layer({"data/removed": Whiteout(), "data/added": File(b"added\n")})
    architecture = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    config = image_config([base, top], architecture=architecture)
    with entered(daemon.namespace):
        push_test_image(daemon.registry_address, "test/whiteout", "latest", [base, top], config)

    result = daemon.ketch("run", "--rm", f"{daemon.registry_address}/test/whiteout", "ls", "/data")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["added", "kept"]


def test_run_bad_reference_exits_125(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "Not:A:Reference", "true")
    assert result.returncode == 125
    assert "invalid reference format" in result.stderr


def test_run_unknown_image_exits_125(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "no-such-image-here", "true")
    assert result.returncode == 125
    assert "no-such-image-here" in result.stderr


def test_run_unreachable_registry_exits_125(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "127.0.0.1:1/nothing/here", "true")
    assert result.returncode == 125
    assert "127.0.0.1:1" in result.stderr


def test_run_missing_executable_exits_127(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "busybox", "no-such-command")
    assert result.returncode == 127
    assert "no-such-command" in result.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_cli_runs_busybox(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "busybox", "echo", "hello")
    assert result.stdout == "hello\n", result.stderr
    assert result.returncode == 0


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_cli_exit_code(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr
