"""A real registry for tests: Debian's docker-registry on a loopback port.

``start_registry`` writes a config (filesystem storage under the given directory, HTTP on
127.0.0.1 only, deletes enabled, no auth, no debug or metrics listener) and starts
/usr/bin/docker-registry, inside a network namespace when ``netns`` names one. The
``registry`` fixture runs one on the host's loopback per test and stops it by PID.

Layout of the storage directory::

    <storage>/config.yml      the generated configuration
    <storage>/data/           the registry's blobs and repositories
    <storage>/registry.log    its log, read to learn when it listens
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
READY_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0

CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: {address}
"""


@dataclass
class Registry:
    address: str  # "127.0.0.1:PORT"
    pid: int
    storage: Path
    process: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.storage / "registry.log"

    def stop(self) -> None:
        """Stop the registry by its PID: SIGTERM, then SIGKILL after a timeout."""
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now.

    Every network namespace has its own ports, so a port free on the host is free in a
    new namespace as well.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_registry(storage: Path, netns: str | None = None, extra_config: str = "") -> Registry:
    """Start docker-registry with its data under ``storage`` and wait until it listens.

    ``extra_config`` is YAML appended to the configuration, such as an ``auth:`` section.

    With ``netns``, it runs inside /run/netns/<netns> through ``nsenter --net=`` (which
    execs the registry, so the PID is the registry's own).
    """
    storage.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    config_path = storage / "config.yml"
    config = CONFIG_TEMPLATE.format(data=storage / "data", address=address) + extra_config
    config_path.write_text(config)

    command = [str(REGISTRY_BINARY), "serve", str(config_path)]
    if netns is not None:
        command = ["nsenter", f"--net=/run/netns/{netns}", *command]
    with open(storage / "registry.log", "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    registry = Registry(address, process.pid, storage, process)
    try:
        _wait_until_listening(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def _wait_until_listening(registry: Registry) -> None:
    # The log is read rather than the port probed, because a registry inside another
    # network namespace cannot be reached from here.
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        text = registry.log_path.read_text(errors="replace")
        if f"listening on {registry.address}" in text:
            return
        if registry.process.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited with status {registry.process.returncode}:\n{text}"
            )
        time.sleep(0.02)
    raise RuntimeError(
        f"docker-registry did not listen on {registry.address} within "
        f"{READY_TIMEOUT_SECONDS} s:\n{registry.log_path.read_text(errors='replace')}"
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Yield the address ("127.0.0.1:PORT") of a registry on the host's loopback."""
    running = start_registry(tmp_path / "registry")
    try:
        yield running.address
    finally:
        running.stop()
