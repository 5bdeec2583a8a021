"""Commit of a container to an image, with the container paused while its rootfs is read.

dockerd pauses a running container for a commit unless the request has ``pause=false``,
so that the image does not capture files halfway through a write. The container is
resumed afterwards whether the commit succeeded or failed, and a container that was
already paused stays paused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ketch.errors import KetchError, NotFound

logger = logging.getLogger(__name__)


async def commit_container(
    engine: Any,
    reference: str,
    options: dict[str, str],
    changes: list[str],
    config: Any,
    pause: bool,
) -> str:
    """Record the changes of container ``reference`` as a new image and return its ID.

    ``options``, ``changes`` and ``config`` are those of ``ImageOperations.commit``.
    With ``pause`` a running container is paused for the duration and resumed after.
    """
    container = engine.containers.resolve(reference)
    must_pause = pause and container.running and not container.state.paused
    if must_pause:
        await engine.control.pause(container.id)
    try:
        image_id = await engine.image_operations.commit(
            container.id, options, changes, config, Path(engine.data_root)
        )
    except BaseException:
        if must_pause:
            await _resume_after_failure(engine, container.id)
        raise
    if must_pause:
        await _resume(engine, container.id)
    return image_id


async def _resume(engine: Any, container_id: str) -> None:
    try:
        container = engine.containers.resolve(container_id)
    except NotFound:
        # The container was removed during the commit, and the image stays valid.
        logger.info("container %s was removed during its commit", container_id)
        return

    # A container killed during the commit is no longer running, so there is nothing to resume.
    if container.running and container.state.paused:
        await engine.control.unpause(container_id)


async def _resume_after_failure(engine: Any, container_id: str) -> None:
    """Resume the container. A failure to resume is logged, not raised, so that the
    client receives the commit's own error."""
    try:
        await _resume(engine, container_id)
    except KetchError as error:
        logger.error("failed to resume container %s after a failed commit: %s", container_id, error)
