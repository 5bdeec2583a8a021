"""Execs whose command cannot start, through the ketch CLI, the docker CLI and docker-py.

dockerd's behaviour is the reference. The exec start writes the runtime's error as one
line on stdout, framed without a TTY and raw with one. The exec inspect then shows
Running false and ExitCode 127 for a command that does not exist, 126 for a file that
is not executable, and the CLIs exit with that code.

One ketchd and one busybox container for the module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import docker
import pytest

from support.daemon import VENV_BIN, KetchDaemon, docker_ok
from support.terminal import run_in_terminal

NOT_FOUND_MESSAGE = (
    "OCI runtime exec failed: exec failed: unable to start container process: "
    'exec: "nonexistentcmd": executable file not found in $PATH: unknown'
)
NOT_EXECUTABLE_FILE = "/tmp/not-executable"
CONTAINER = "exec-failures"


@pytest.fixture(scope="module")
def container(daemon: KetchDaemon) -> Iterator[str]:
    docker_ok(daemon, "run", "-d", "--name", CONTAINER, "busybox", "sleep", "600")
    docker_ok(daemon, "exec", CONTAINER, "sh", "-c", f"echo 'echo hi' > {NOT_EXECUTABLE_FILE}")
    yield CONTAINER
    daemon.docker("rm", "-f", CONTAINER)


@pytest.fixture(scope="module")
def client(daemon: KetchDaemon) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=daemon.host)
    try:
        yield client
    finally:
        client.close()


def docker_env(daemon: KetchDaemon) -> dict[str, str]:
    return dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "docker"))


# The ketch CLI


def test_ketch_exec_missing_command(daemon: KetchDaemon, container: str) -> None:
    result = daemon.ketch("exec", container, "nonexistentcmd")
    assert result.returncode == 127, result.stderr
    assert result.stdout.replace("\r", "") == NOT_FOUND_MESSAGE + "\n"


def test_ketch_exec_tty_missing_command(daemon: KetchDaemon, container: str) -> None:
    command = [str(VENV_BIN / "ketch"), "-H", daemon.host, "exec", "-it", container]
    output, returncode = run_in_terminal([*command, "nonexistentcmd"], dict(os.environ))
    assert returncode == 127, output
    assert NOT_FOUND_MESSAGE in output


def test_ketch_exec_not_executable(daemon: KetchDaemon, container: str) -> None:
    result = daemon.ketch("exec", container, NOT_EXECUTABLE_FILE)
    assert result.returncode == 126, result.stderr
    assert "permission denied" in result.stdout


# The docker CLI


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_exec_missing_command(daemon: KetchDaemon, container: str) -> None:
    result = daemon.docker("exec", container, "nonexistentcmd")
    assert result.returncode == 127, result.stderr
    assert NOT_FOUND_MESSAGE in result.stdout


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_exec_tty_missing_command(daemon: KetchDaemon, container: str) -> None:
    command = ["docker", "exec", "-it", container, "nonexistentcmd"]
    output, returncode = run_in_terminal(command, docker_env(daemon))
    assert returncode == 127, output
    assert NOT_FOUND_MESSAGE in output


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_exec_not_executable(daemon: KetchDaemon, container: str) -> None:
    result = daemon.docker("exec", container, NOT_EXECUTABLE_FILE)
    assert result.returncode == 126, result.stderr
    assert "permission denied" in result.stdout


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_exec_tty_not_executable(daemon: KetchDaemon, container: str) -> None:
    command = ["docker", "exec", "-it", container, NOT_EXECUTABLE_FILE]
    output, returncode = run_in_terminal(command, docker_env(daemon))
    assert returncode == 126, output
    assert "permission denied" in output


# docker-py


def test_docker_py_missing_command(client: docker.DockerClient, container: str) -> None:
    result = client.containers.get(container).exec_run(["nonexistentcmd"])
    assert result.exit_code == 127
    assert result.output == NOT_FOUND_MESSAGE.encode() + b"\r\n"


def test_docker_py_tty_missing_command(client: docker.DockerClient, container: str) -> None:
    result = client.containers.get(container).exec_run(["nonexistentcmd"], tty=True)
    assert result.exit_code == 127
    assert result.output == NOT_FOUND_MESSAGE.encode() + b"\r\n"


def test_docker_py_not_executable(client: docker.DockerClient, container: str) -> None:
    result = client.containers.get(container).exec_run([NOT_EXECUTABLE_FILE])
    assert result.exit_code == 126
    assert b"permission denied" in result.output


def test_failed_exec_inspect_and_restart(client: docker.DockerClient, container: str) -> None:
    exec_id = client.api.exec_create(container, ["nonexistentcmd"])["Id"]
    client.api.exec_start(exec_id)
    inspected = client.api.exec_inspect(exec_id)
    assert inspected["Running"] is False
    assert inspected["ExitCode"] == 127

    with pytest.raises(docker.errors.APIError) as raised:
        client.api.exec_start(exec_id)
    assert raised.value.status_code == 409


def test_failed_detached_exec(client: docker.DockerClient, container: str) -> None:
    exec_id = client.api.exec_create(container, ["nonexistentcmd"])["Id"]
    with pytest.raises(docker.errors.APIError) as raised:
        client.api.exec_start(exec_id, detach=True)
    assert raised.value.status_code == 400
    assert NOT_FOUND_MESSAGE in str(raised.value.explanation)
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 127


def test_exec_after_failure_works(daemon: KetchDaemon, container: str) -> None:
    daemon.docker("exec", container, "nonexistentcmd")
    assert docker_ok(daemon, "exec", container, "echo", "still fine") == "still fine\n"


def test_ketch_exec_detached_missing_command(daemon: KetchDaemon, container: str) -> None:
    result = daemon.ketch("exec", "-d", container, "nonexistentcmd")
    assert result.returncode == 1, result.stdout
    assert NOT_FOUND_MESSAGE in result.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_exec_detached_missing_command(daemon: KetchDaemon, container: str) -> None:
    result = daemon.docker("exec", "-d", container, "nonexistentcmd")
    assert result.returncode == 1, result.stdout
    assert NOT_FOUND_MESSAGE in result.stderr
