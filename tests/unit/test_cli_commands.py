"""``ketch ps``, ``images``, ``rm``, ``pull`` and ``version`` in a subprocess against the
API server with a fake engine."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import Unavailable
from support.cli import run_ketch
from support.fake_engine import ServedEngine, serve_fake_engine

PULL_PROGRESS = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Downloading", "progressDetail": {"current": 5, "total": 10}, "id": "a1b2c3d4e5f6"},
    {"status": "Downloading", "progressDetail": {"current": 10, "total": 10}, "id": "a1b2c3d4e5f6"},
    {"status": "Download complete", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Pull complete", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Digest: sha256:" + "d" * 64},
    {"status": "Status: Downloaded newer image for busybox:latest"},
]


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    directory = Path(tempfile.mkdtemp(prefix="ketch-cli-", dir="/tmp"))
    try:
        with serve_fake_engine(directory / "api.sock") as served:
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def start_containers(served: ServedEngine) -> tuple[str, str]:
    """Create a running container "web" and an exited one "done"; return their IDs."""
    served.engine.add_image("busybox:latest")
    running = run_ketch("run", "-d", "--name", "web", "busybox", "sleep", host=served.host)
    exited = run_ketch("run", "--name", "done", "busybox", "exit", "2", host=served.host)
    assert running.returncode == 0, running.stderr
    assert exited.returncode == 2, exited.stderr
    done_id = next(c.id for c in served.engine.containers.values() if c.name == "done")
    return running.stdout.strip(), done_id


def test_ps_table(served: ServedEngine) -> None:
    web_id, _ = start_containers(served)
    # Created 3 hours ago, so that the CREATED column does not change while the test runs.
    for container in served.engine.containers.values():
        container.created = int(time.time()) - 3 * 3600
    lines = run_ketch("ps", host=served.host).stdout.splitlines()
    assert lines[0] == (
        "CONTAINER ID   IMAGE     COMMAND   CREATED       STATUS         PORTS     NAMES"
    )
    assert lines[1] == (
        f'{web_id[:12]}   busybox   "sleep"   3 hours ago   Up 3 seconds             web'
    )
    assert len(lines) == 2


def test_ps_all_shows_exited(served: ServedEngine) -> None:
    start_containers(served)
    lines = run_ketch("ps", "-a", host=served.host).stdout.splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["NAMES", "web", "done"]
    assert "Exited (2) 1 second ago" in lines[2]


def test_ps_quiet_combined_flags(served: ServedEngine) -> None:
    web_id, done_id = start_containers(served)
    assert run_ketch("ps", "-q", host=served.host).stdout == f"{web_id[:12]}\n"
    result = run_ketch("ps", "-aq", "--no-trunc", host=served.host)
    assert result.stdout == f"{web_id}\n{done_id}\n"


def test_ps_rejects_arguments(served: ServedEngine) -> None:
    result = run_ketch("ps", "extra", host=served.host)
    assert result.returncode == 125
    assert result.stderr == "\"ketch ps\" accepts no arguments.\nSee 'ketch ps --help'.\n"


def test_images_table(served: ServedEngine) -> None:
    now = int(time.time())
    busybox_id = served.engine.add_image("busybox:latest", size=4_261_000, created=now - 3600)
    app_id = served.engine.add_image(
        "127.0.0.1:5000/team/app:v1", size=812, created=now - 86400 * 20
    )
    lines = run_ketch("images", host=served.host).stdout.splitlines()
    assert lines == [
        "REPOSITORY                TAG       IMAGE ID       CREATED             SIZE",
        f"busybox                   latest    {busybox_id[7:19]}   About an hour ago   4.26MB",
        f"127.0.0.1:5000/team/app   v1        {app_id[7:19]}   2 weeks ago         812B",
    ]


def test_images_quiet(served: ServedEngine) -> None:
    image_id = served.engine.add_image("busybox:latest")
    assert run_ketch("images", "-q", host=served.host).stdout == f"{image_id[7:19]}\n"


def test_images_reference_argument(served: ServedEngine) -> None:
    served.engine.add_image("busybox:latest")
    served.engine.add_image("alpine:3.19")
    lines = run_ketch("images", "alpine", host=served.host).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["REPOSITORY", "alpine"]


def test_rm_several_with_one_missing(served: ServedEngine) -> None:
    _, done_id = start_containers(served)
    result = run_ketch("rm", "done", "nope", "-f", "web", host=served.host)
    # Under --force a missing container is reported but is not a failure.
    assert result.returncode == 0
    assert result.stdout == "done\nweb\n"
    assert result.stderr == "Error response from daemon: No such container: nope\n"
    assert served.engine.containers == {}


def test_rm_running_without_force_fails(served: ServedEngine) -> None:
    start_containers(served)
    result = run_ketch("rm", "web", host=served.host)
    assert result.returncode == 1
    assert "You cannot remove a running container" in result.stderr


def test_rm_without_arguments_exits_125(served: ServedEngine) -> None:
    result = run_ketch("rm", host=served.host)
    assert result.returncode == 125
    assert result.stderr.startswith('"ketch rm" requires at least 1 argument.')


def test_pull_progress_in_a_pipe(served: ServedEngine) -> None:
    served.engine.pull_results["busybox:latest"] = (PULL_PROGRESS, None)
    result = run_ketch("pull", "busybox", host=served.host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Using default tag: latest",
        "latest: Pulling from library/busybox",
        "a1b2c3d4e5f6: Pulling fs layer",
        "a1b2c3d4e5f6: Download complete",
        "a1b2c3d4e5f6: Pull complete",
        "Digest: sha256:" + "d" * 64,
        "Status: Downloaded newer image for busybox:latest",
        "docker.io/library/busybox:latest",
    ]
    assert "\x1b" not in result.stdout


def test_pull_error_mid_stream_exits_1(served: ServedEngine) -> None:
    error = Unavailable("registry 127.0.0.1:1 is unreachable: connection refused")
    served.engine.pull_results["127.0.0.1:1/app:v2"] = (PULL_PROGRESS[:1], error)
    result = run_ketch("pull", "127.0.0.1:1/app:v2", host=served.host)
    assert result.returncode == 1
    assert result.stdout == "latest: Pulling from library/busybox\n"
    assert result.stderr == "registry 127.0.0.1:1 is unreachable: connection refused\n"


def test_pull_quiet_prints_reference_only(served: ServedEngine) -> None:
    served.engine.pull_results["127.0.0.1:5000/app:v2"] = (PULL_PROGRESS, None)
    result = run_ketch("pull", "-q", "127.0.0.1:5000/app:v2", host=served.host)
    assert result.stdout == "127.0.0.1:5000/app:v2\n"


def test_version_shows_client_and_server(served: ServedEngine) -> None:
    result = run_ketch("version", host=served.host)
    assert result.returncode == 0, result.stderr
    assert " Version:        0.1.0" in result.stdout.splitlines()
    assert "  API version:    1.45 (minimum version 1.24)" in result.stdout.splitlines()


def test_version_daemon_unreachable_exits_1() -> None:
    result = run_ketch("version", host="unix:///nonexistent/ketch.sock")
    assert result.returncode == 1
    assert result.stdout.startswith("Client:\n")
    assert result.stderr.startswith("Cannot connect to the ketch daemon")


def test_global_version_flag() -> None:
    result = run_ketch("--version")
    assert result.stdout == "ketch version 0.1.0\n"
    assert result.returncode == 0


def test_unknown_command_exits_1() -> None:
    result = run_ketch("frobnicate")
    assert result.returncode == 1
    assert result.stderr == "ketch: 'frobnicate' is not a ketch command.\nSee 'ketch --help'\n"


def test_invalid_host_exits_125() -> None:
    result = run_ketch("ps", host="tcp://127.0.0.1:2375")
    assert result.returncode == 125
    assert result.stderr == (
        "invalid host 'tcp://127.0.0.1:2375': expected unix:///path/to/socket\n"
        "See 'ketch --help'.\n"
    )


def test_host_from_environment(served: ServedEngine) -> None:
    served.engine.add_image("busybox:latest")
    result = run_ketch("images", "-q", env={"KETCH_HOST": served.host})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) == 12


def test_ps_quotes_and_truncates_command(served: ServedEngine) -> None:
    served.engine.add_image("busybox:latest")
    run_ketch("run", "-d", "busybox", "sleep", 'say "hi" to everyone', host=served.host)
    row = run_ketch("ps", host=served.host).stdout.splitlines()[1]
    assert '"sleep say \\"hi\\" to e…"' in row
