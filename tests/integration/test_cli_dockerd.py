"""The ``ketch`` CLI against Debian's dockerd 20.10: the CLI speaks the Engine API as
docker defines it, so it drives dockerd as it drives ketchd.

dockerd runs as in ``test_callers_dockerd`` (its own network namespace, roots, socket
and cgroup parent, with its default runtime, runc), and busybox comes in with
``docker import``. Containers run with ``--network none`` because that dockerd has no
bridge.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_callers_dockerd import DOCKERD, Dockerd, import_busybox, remove_cgroup_trees

from support.netns import network_namespace

KETCH = Path(sys.executable).parent / "ketch"


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    if not DOCKERD.exists() or shutil.which("docker") is None:
        pytest.skip("docker.io is not installed (/usr/sbin/dockerd and docker)")
    root = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    cgroup_parent = f"ketch-cli-{secrets.token_hex(4)}"
    with network_namespace("ketch-cli-dockerd") as namespace:
        daemon = Dockerd(root, namespace, cgroup_parent)
        try:
            daemon.wait_until_ready()
            import_busybox(daemon, tmp_path_factory.mktemp("cli-dockerd-image"))
            yield daemon
        finally:
            daemon.docker("rm", "-f", *daemon.docker("ps", "-aq").stdout.split())
            daemon.stop()
            subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
            subprocess.run(["umount", "-R", "-l", str(root / "data")], capture_output=True)
            remove_cgroup_trees(cgroup_parent)
            shutil.rmtree(root, ignore_errors=True)


def ketch(
    dockerd: Dockerd, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KETCH), "-H", f"unix://{dockerd.socket}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
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
