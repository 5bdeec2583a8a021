"""Network namespaces that tests make for the daemons they run.

Daemons under test (ketchd, dockerd, a registry) run inside a namespace made here, with
only a loopback interface, so nothing they do reaches beyond this machine. The namespace
is made with ``ip netns add`` and processes join it with ``nsenter --net=``, because
``ip netns exec`` also remounts /sys and so hides the cgroup mounts from what it runs.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkNamespace:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def command(self, argv: list[str]) -> list[str]:
        """Return ``argv`` wrapped so that it runs inside this namespace."""
        return ["nsenter", f"--net={self.path}", *argv]


def create_namespace(prefix: str = "ketch-test") -> NetworkNamespace:
    """Make a network namespace with its loopback interface up."""
    namespace = NetworkNamespace(f"{prefix}-{secrets.token_hex(4)}")
    subprocess.run(["ip", "netns", "add", namespace.name], check=True)
    try:
        subprocess.run(["ip", "-n", namespace.name, "link", "set", "lo", "up"], check=True)
    except subprocess.CalledProcessError:
        delete_namespace(namespace)
        raise
    return namespace


def delete_namespace(namespace: NetworkNamespace) -> None:
    subprocess.run(["ip", "netns", "delete", namespace.name], check=False)


@contextmanager
def network_namespace(prefix: str = "ketch-test") -> Iterator[NetworkNamespace]:
    """Yield a fresh network namespace and delete it afterwards, also on failure."""
    namespace = create_namespace(prefix)
    try:
        yield namespace
    finally:
        delete_namespace(namespace)


@contextmanager
def entered(namespace: NetworkNamespace) -> Iterator[None]:
    """Run the block with the calling thread inside ``namespace``.

    Sockets made in the block belong to that namespace, so a test can talk to a registry
    that listens on the namespace's loopback. The thread returns to its own namespace
    afterwards, also on failure.
    """
    from ketch.linux.syscalls import CLONE_NEWNET, setns

    with open("/proc/thread-self/ns/net", "rb") as original, open(namespace.path, "rb") as target:
        setns(target.fileno(), CLONE_NEWNET)
        try:
            yield
        finally:
            setns(original.fileno(), CLONE_NEWNET)
