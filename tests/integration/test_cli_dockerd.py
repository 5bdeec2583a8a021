"""The ``ketch`` CLI against Debian's dockerd 20.10: the CLI speaks the Engine API as
docker defines it, so it drives dockerd as it drives ketchd.

dockerd runs as in ``test_callers_dockerd`` (its own network namespace, roots, socket
and cgroup parent, with its default runtime, runc), and busybox comes in with
``docker import``. Containers run with ``--network none`` because that dockerd has no
bridge.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cgroups import remove_cgroup_trees
from support.dockerd import DOCKERD, Dockerd, import_busybox
from support.netns import NetworkNamespace, network_namespace
from support.registry import start_registry

KETCH = Path(sys.executable).parent / "ketch"


@dataclass
class Setup:
    dockerd: Dockerd
    namespace: NetworkNamespace


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if not DOCKERD.exists() or shutil.which("docker") is None:
        pytest.skip("docker.io is not installed (/usr/sbin/dockerd and docker)")
    root = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    cgroup_parent = f"ketch-cli-{secrets.token_hex(4)}"
    with network_namespace("ketch-cli-dockerd") as namespace:
        daemon = Dockerd(root, namespace, cgroup_parent)
        try:
            daemon.wait_until_ready()
            import_busybox(daemon, tmp_path_factory.mktemp("cli-dockerd-image"))
            yield Setup(daemon, namespace)
        finally:
            daemon.docker("rm", "-f", *daemon.docker("ps", "-aq").stdout.split())
            daemon.stop()
            subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
            subprocess.run(["umount", "-R", "-l", str(root / "data")], capture_output=True)
            remove_cgroup_trees(cgroup_parent)
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def dockerd(setup: Setup) -> Dockerd:
    return setup.dockerd


@pytest.fixture
def registry(setup: Setup, tmp_path: Path) -> Iterator[str]:
    """A registry beside dockerd that requires the user "me" with password "secret";
    dockerd trusts plain HTTP on 127.0.0.0/8. Returns its address."""
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", "me", "secret"], capture_output=True, text=True, check=True
    )
    (tmp_path / "htpasswd").write_text(htpasswd.stdout)
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp_path / 'htpasswd'}\n"
    server = start_registry(tmp_path / "registry", setup.namespace.name, extra_config=auth)
    try:
        yield server.address
    finally:
        server.stop()


def ketch(
    dockerd: Dockerd, *args: str, stdin: str | None = None, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ketch CLI against dockerd, with ``KETCH_CONFIG`` set when ``config`` is."""
    environment = dict(os.environ, KETCH_CONFIG=str(config)) if config else None
    return subprocess.run(
        [str(KETCH), "-H", f"unix://{dockerd.socket}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env=environment,
    )


def test_version_shows_dockerd(dockerd: Dockerd) -> None:
    result = ketch(dockerd, "version", "--format", "{{.Server.Version}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("20.10")


def test_run_output_and_exit_code(dockerd: Dockerd) -> None:
    result = ketch(
        dockerd, "run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hi; exit 3"
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hi\n"


def test_run_stdin(dockerd: Dockerd) -> None:
    result = ketch(
        dockerd, "run", "--rm", "-i", "--network", "none", "busybox", "cat", stdin="piped\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "piped\n"


def test_lifecycle_and_templates(dockerd: Dockerd) -> None:
    started = ketch(
        dockerd, "run", "-d", "--name", "cli-web", "-l", "tier=front", "--network", "none",
        "-m", "64m", "busybox", "sh", "-c", "echo ready; sleep 100",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        listing = ketch(dockerd, "ps", "--format", '{{.Names}} {{.Label "tier"}} {{.State}}')
        assert listing.stdout.splitlines() == ["cli-web front running"], listing.stderr
        memory = ketch(dockerd, "inspect", "-f", "{{.HostConfig.Memory}}", "cli-web")
        assert memory.stdout == f"{64 * 1024 * 1024}\n"
        executed = ketch(dockerd, "exec", "cli-web", "sh", "-c", "echo in; exit 5")
        assert executed.returncode == 5, executed.stderr
        assert executed.stdout == "in\n"
        top = ketch(dockerd, "top", "cli-web")
        assert "sleep 100" in top.stdout, top.stderr
        stats = ketch(dockerd, "stats", "--no-stream", "--format", "{{.Name}}", "cli-web")
        assert stats.stdout == "cli-web\n", stats.stderr
        logs = ketch(dockerd, "logs", "cli-web")
        assert logs.stdout == "ready\n", logs.stderr
        assert ketch(dockerd, "kill", "cli-web").stdout == "cli-web\n"
        assert ketch(dockerd, "wait", "cli-web").stdout == "137\n"
    finally:
        ketch(dockerd, "rm", "-f", "cli-web")


def test_cp_both_ways(dockerd: Dockerd, tmp_path: Path) -> None:
    ketch(dockerd, "create", "--name", "cli-cp", "--network", "none", "busybox", "true")
    try:
        source = tmp_path / "note.txt"
        source.write_text("hello\n")
        put = ketch(dockerd, "cp", str(source), "cli-cp:/tmp/")
        assert put.returncode == 0, put.stderr
        got = ketch(dockerd, "cp", "cli-cp:/tmp/note.txt", str(tmp_path / "back.txt"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "back.txt").read_text() == "hello\n"
        changes = ketch(dockerd, "diff", "cli-cp")
        assert "A /tmp/note.txt" in changes.stdout.splitlines(), changes.stderr
    finally:
        ketch(dockerd, "rm", "-f", "cli-cp")


def test_images_tag_history_rmi(dockerd: Dockerd) -> None:
    tagged = ketch(dockerd, "tag", "busybox", "cli/box:v1")
    assert tagged.returncode == 0, tagged.stderr
    images = ketch(dockerd, "images", "--format", "{{.Repository}}:{{.Tag}}", "cli/box")
    assert images.stdout == "cli/box:v1\n", images.stderr
    history = ketch(dockerd, "history", "-q", "cli/box:v1")
    assert history.returncode == 0, history.stderr
    removed = ketch(dockerd, "rmi", "cli/box:v1")
    assert removed.stdout == "Untagged: cli/box:v1\n", removed.stderr


def test_save_and_load(dockerd: Dockerd, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    saved = ketch(dockerd, "save", "-o", str(archive), "busybox")
    assert saved.returncode == 0, saved.stderr
    loaded = ketch(dockerd, "load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert "busybox:latest" in loaded.stdout


def test_info_and_events(dockerd: Dockerd) -> None:
    info = ketch(dockerd, "info", "--format", "{{.OSType}}")
    assert info.stdout == "linux\n", info.stderr
    events = ketch(dockerd, "events", "--since", "0", "--until", "1", "--format", "{{.Type}}")
    assert events.returncode == 0, events.stderr


def run_in_pty(
    argv: list[str],
    keys: bytes,
    rows: int = 33,
    columns: int = 101,
    resize_to: tuple[int, int] | None = None,
) -> tuple[bytes, int]:
    """Run ``argv`` on a new pseudo-terminal of the given size, optionally resize it
    once the command runs, type ``keys``, and return the output and exit status."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    output = b""
    try:
        time.sleep(0.5)
        if resize_to is not None:
            # The kernel sends SIGWINCH to the CLI, which passes the size on.
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", *resize_to, 0, 0))
            time.sleep(1)
        os.write(fd, keys)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            output += data
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return output, os.waitstatus_to_exitcode(status)


def test_run_interactive_tty(dockerd: Dockerd) -> None:
    argv = [str(KETCH), "-H", f"unix://{dockerd.socket}", "run", "-it", "--rm", "--network", "none"]
    output, status = run_in_pty([*argv, "busybox", "sh"], b"stty size; echo $((6*7)); exit 3\r")
    assert status == 3, output
    assert b"33 101" in output
    assert b"42" in output


def test_exec_interactive_tty(dockerd: Dockerd) -> None:
    ketch(
        dockerd,
        "run",
        "-d",
        "--name",
        "cli-exec-tty",
        "--network",
        "none",
        "busybox",
        "sleep",
        "100",
    )
    try:
        argv = [str(KETCH), "-H", f"unix://{dockerd.socket}", "exec", "-it", "cli-exec-tty", "sh"]
        output, status = run_in_pty(argv, b"tty; exit 4\r")
        assert status == 4, output
        assert b"/dev/pts/" in output
    finally:
        ketch(dockerd, "rm", "-f", "cli-exec-tty")


def test_run_tty_follows_resize(dockerd: Dockerd) -> None:
    argv = [str(KETCH), "-H", f"unix://{dockerd.socket}", "run", "-it", "--rm", "--network", "none"]
    output, status = run_in_pty([*argv, "busybox", "sh"], b"stty size; exit\r", resize_to=(40, 120))
    assert status == 0, output
    assert b"40 120" in output


def test_login_push_pull(dockerd: Dockerd, registry: str, tmp_path: Path) -> None:
    config = tmp_path / "ketch-config"
    target = f"{registry}/cli/box:v1"
    assert ketch(dockerd, "tag", "busybox", target).returncode == 0

    refused = ketch(dockerd, "push", target, config=config)
    assert refused.returncode == 1
    assert "no basic auth credentials" in refused.stderr

    login = ketch(
        dockerd, "login", "-u", "me", "--password-stdin", registry, stdin="secret\n", config=config
    )
    assert login.stdout == "Login Succeeded\n", login.stderr
    pushed = ketch(dockerd, "push", target, config=config)
    assert pushed.returncode == 0, pushed.stderr
    assert "Pushed" in pushed.stdout

    assert ketch(dockerd, "rmi", target).returncode == 0
    pulled = ketch(dockerd, "pull", target, config=config)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.splitlines()[-1] == target
    logout = ketch(dockerd, "logout", registry, config=config)
    assert logout.stdout == f"Removing login credentials for {registry}\n"
