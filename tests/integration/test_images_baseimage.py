"""scripts/make-base-image: busybox from busybox-static, pushed, pulled and run."""

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

import support.registry
from support.images import image_store

# The registry fixture: a docker-registry on 127.0.0.1, stopped by PID after the test.
registry = support.registry.registry

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-base-image"


def make_base_image(address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--registry", address, *extra], capture_output=True, text=True, timeout=60
    )


def test_base_image_runs_sh(tmp_path: Path, registry: str) -> None:
    made = make_base_image(registry)
    assert made.returncode == 0, made.stderr
    with image_store(tmp_path) as store:
        image = asyncio.run(store.pull(f"{registry}/library/busybox:latest"))
        assert image.config["Cmd"] == ["sh"]
        assert image.config["Env"][0].startswith("PATH=")
        merged = store.prepare_rootfs("base", image)
        result = subprocess.run(
            ["chroot", str(merged), "/bin/sh", "-c", "echo hello; id -un; ls -d /tmp /root"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.stdout.splitlines() == ["hello", "root", "/root", "/tmp"], result.stderr
        assert (merged / "tmp").stat().st_mode & 0o7777 == 0o1777


def test_base_image_is_reproducible(registry: str) -> None:
    first = make_base_image(registry)
    second = make_base_image(registry)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_base_image_custom_name(registry: str) -> None:
    made = make_base_image(registry, "--name", "tools/box:v1")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"{registry}/tools/box:v1 sha256:")


def test_base_image_unreachable_registry() -> None:
    made = make_base_image("127.0.0.1:1")
    assert made.returncode == 1
    assert "127.0.0.1:1" in made.stderr


# debootstrap takes about 35 s on first use (2 cores, Debian's mirror), so the Debian
# image is tested when its layer is cached or KETCH_TEST_DEBIAN=1 is set.
DEBIAN_CACHE = Path("/var/cache/ketch-base")
DEBIAN_WANTED = os.environ.get("KETCH_TEST_DEBIAN") == "1" or any(
    DEBIAN_CACHE.glob("debian-bookworm-*.tar.gz")
)


@pytest.mark.skipif(not DEBIAN_WANTED, reason="set KETCH_TEST_DEBIAN=1 to run debootstrap")
def test_debian_image_runs_bash(tmp_path: Path, registry: str) -> None:
    made = subprocess.run(
        [str(SCRIPT), "--registry", registry, "--debian"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"{registry}/library/debian:bookworm sha256:" in made.stdout
    with image_store(tmp_path) as store:
        image = asyncio.run(store.pull(f"{registry}/library/debian:bookworm"))
        assert image.config["Cmd"] == ["bash"]
        merged = store.prepare_rootfs("debian", image)
        result = subprocess.run(
            ["chroot", str(merged), "/bin/bash", "-c", "cat /etc/debian_version; dpkg -s bash"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("12.")
        assert not list((merged / "var" / "lib" / "apt" / "lists").iterdir())
