"""The test registry inside a network namespace, as the end-to-end tests run it."""

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from support.images import image_store
from support.netns import entered, network_namespace
from support.registry import start_registry


def test_registry_in_namespace(tmp_path: Path) -> None:
    with network_namespace("ketch-images") as namespace:
        running = start_registry(tmp_path / "registry", netns=namespace.name)
        try:
            command = [
                sys.executable,
                "-m",
                "ketch.images.baseimage",
                "--registry",
                running.address,
            ]
            pushed = subprocess.run(namespace.command(command), capture_output=True, text=True,
                                    timeout=60)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr

            host, port = running.address.split(":")
            with socket.socket() as probe:
                assert probe.connect_ex((host, int(port))) != 0

            with image_store(tmp_path / "store") as store, entered(namespace):
                image = asyncio.run(store.pull(f"{running.address}/library/busybox"))
            assert image.config["Cmd"] == ["sh"]
        finally:
            running.stop()
        assert running.process.returncode is not None
