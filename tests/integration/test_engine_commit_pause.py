"""Commit pauses a running container while it reads the rootfs and resumes it afterwards,
also when the commit fails, as dockerd does."""

from __future__ import annotations

import time

import docker
import pytest
from docker.models.containers import Container

from support.daemon import KetchDaemon


def actions_since(client: docker.DockerClient, container: Container, since: float) -> list[str]:
    """Return the actions of the container's events from ``since`` until now."""
    events = client.events(
        since=since, until=time.time() + 1, decode=True, filters={"container": container.id}
    )
    return [event["Action"] for event in events]


def state_of(container: Container) -> dict[str, object]:
    container.reload()
    return container.attrs["State"]


def remove_images(client: docker.DockerClient, *names: str) -> None:
    for name in names:
        try:
            client.images.remove(name)
        except docker.errors.ImageNotFound:
            pass


def test_commit_pauses_and_resumes(client: docker.DockerClient, running: Container) -> None:
    since = time.time() - 1
    try:
        running.commit("pause/committed", "v1")
        actions = actions_since(client, running, since)
        assert actions.index("pause") < actions.index("commit")
        assert actions.index("commit") < actions.index("unpause")
        assert state_of(running)["Running"] is True
        assert state_of(running)["Paused"] is False
    finally:
        remove_images(client, "pause/committed:v1")


def test_failed_commit_resumes(client: docker.DockerClient, running: Container) -> None:
    since = time.time() - 1
    with pytest.raises(docker.errors.APIError) as caught:
        running.commit("pause/never", "v1", changes=["NOSUCHINSTRUCTION x"])
    assert caught.value.status_code == 400
    actions = actions_since(client, running, since)
    assert "pause" in actions
    assert "unpause" in actions
    assert "commit" not in actions
    assert state_of(running)["Paused"] is False


def test_commit_without_pause(client: docker.DockerClient, running: Container) -> None:
    since = time.time() - 1
    try:
        client.api.commit(running.id, "pause/unpaused", "v1", pause=False)
        actions = actions_since(client, running, since)
        assert "commit" in actions
        assert "pause" not in actions
    finally:
        remove_images(client, "pause/unpaused:v1")


def test_paused_container_stays_paused(client: docker.DockerClient, running: Container) -> None:
    running.pause()
    try:
        running.commit("pause/frozen", "v1")
        assert state_of(running)["Paused"] is True
    finally:
        running.unpause()
        remove_images(client, "pause/frozen:v1")


def test_docker_cli_commit_pauses(
    daemon: KetchDaemon, client: docker.DockerClient, running: Container
) -> None:
    since = time.time() - 1
    try:
        result = daemon.docker("commit", running.id, "pause/cli:v1", timeout=120)
        assert result.returncode == 0, result.stderr
        actions = actions_since(client, running, since)
        assert "pause" in actions
        assert "unpause" in actions
        assert state_of(running)["Running"] is True
    finally:
        remove_images(client, "pause/cli:v1")
