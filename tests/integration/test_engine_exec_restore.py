"""Exec records across a SIGKILL and restart of ketchd: inspect still finds each exec,
and an exec that ended while ketchd was down gets its exit code and exec_die event."""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from support.daemon import KetchDaemon
from support.restart import restart_ketchd

WAIT_SECONDS = 30.0


def start_detached(client: docker.DockerClient, container: Container, script: str) -> str:
    exec_id = client.api.exec_create(container.id, ["sh", "-c", script])["Id"]
    client.api.exec_start(exec_id, detach=True)
    return exec_id


def wait_for_exit(client: docker.DockerClient, exec_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        inspected = client.api.exec_inspect(exec_id)
        if not inspected["Running"] or time.monotonic() > deadline:
            return inspected
        time.sleep(0.1)


def exec_die_codes(client: docker.DockerClient, container: Container, since: float) -> list[str]:
    events = client.events(
        since=since, until=time.time() + 1, decode=True, filters={"container": container.id}
    )
    return [
        event["Actor"]["Attributes"]["exitCode"]
        for event in events
        if event["Action"] == "exec_die"
    ]


def test_exec_ended_while_down(
    daemon: KetchDaemon, client: docker.DockerClient, running: Container
) -> None:
    exec_id = start_detached(client, running, "sleep 1; exit 5")
    since = time.time() - 1
    restart_ketchd(daemon, while_down=3.0)
    inspected = client.api.exec_inspect(exec_id)
    assert inspected["Running"] is False
    assert inspected["ExitCode"] == 5
    assert exec_die_codes(client, running, since) == ["5"]


def test_exec_running_across_restart(
    daemon: KetchDaemon, client: docker.DockerClient, running: Container
) -> None:
    exec_id = start_detached(client, running, "sleep 4; exit 6")
    restart_ketchd(daemon)
    assert client.api.exec_inspect(exec_id)["Running"] is True
    inspected = wait_for_exit(client, exec_id)
    assert inspected["Running"] is False
    assert inspected["ExitCode"] == 6


def test_finished_exec_kept(
    daemon: KetchDaemon, client: docker.DockerClient, running: Container
) -> None:
    exec_id = client.api.exec_create(running.id, ["sh", "-c", "exit 3"])["Id"]
    client.api.exec_start(exec_id)
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 3
    restart_ketchd(daemon)
    inspected = client.api.exec_inspect(exec_id)
    assert inspected["ExitCode"] == 3
    assert inspected["ProcessConfig"]["arguments"] == ["-c", "exit 3"]


def test_record_on_disk(
    daemon: KetchDaemon, client: docker.DockerClient, running: Container
) -> None:
    exec_id = client.api.exec_create(running.id, ["true"])["Id"]
    path = daemon.data_root / "containers" / running.id / "execs" / f"{exec_id}.json"
    assert path.is_file()


def test_unknown_exec_after_restart(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    restart_ketchd(daemon)
    with pytest.raises(docker.errors.NotFound):
        client.api.exec_inspect("0" * 64)
