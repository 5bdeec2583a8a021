"""Selection of containers for ``GET /containers/json``: ``all``, ``limit`` and filters.

Filters follow ``docker ps --filter``: ``id`` (prefix), ``name`` (regular expression
searched in the name, leading "/" included), ``status``, ``label`` (``key`` or
``key=value``), ``exited`` (exit code) and ``ancestor`` (the image name or id the
container was created from). Values of one filter are alternatives; different filters
must all match.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ketch.engine.store import Container
from ketch.engine.views import status_name
from ketch.errors import InvalidArgument

STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _match_id(container: Container, value: str) -> bool:
    return container.id.startswith(value)


def _match_name(container: Container, value: str) -> bool:
    try:
        return re.search(value, container.name) is not None
    except re.error as error:
        raise InvalidArgument(f"invalid filter 'name={value}': {error}") from None


def _match_status(container: Container, value: str) -> bool:
    if value not in STATUSES:
        raise InvalidArgument(
            f"invalid filter 'status={value}': expected one of {', '.join(STATUSES)}"
        )
    return status_name(container) == value


def _match_label(container: Container, value: str) -> bool:
    labels = container.config.get("Labels") or {}
    key, has_value, expected = value.partition("=")
    if key not in labels:
        return False
    return not has_value or labels[key] == expected


def _match_exited(container: Container, value: str) -> bool:
    if not value.lstrip("-").isdigit():
        raise InvalidArgument(f"invalid filter 'exited={value}': expected an exit code")
    return container.state.status == "exited" and container.state.exit_code == int(value)


def _match_ancestor(container: Container, value: str) -> bool:
    image = container.config.get("Image", "")
    return value in (image, container.image_id) or (":" not in value and image == f"{value}:latest")


def _match_network(container: Container, value: str) -> bool:
    # By name as docker's ps shows it, or by the id a container's endpoint records.
    if value in container.network_endpoints:
        return True
    ids = [fields.get("NetworkID", "") for fields in container.network_endpoints.values()]
    return any(network_id and network_id.startswith(value) for network_id in ids)


_MATCHERS: dict[str, Callable[[Container, str], bool]] = {
    "id": _match_id,
    "name": _match_name,
    "status": _match_status,
    "label": _match_label,
    "exited": _match_exited,
    "ancestor": _match_ancestor,
    "network": _match_network,
}


def select_containers(
    containers: list[Container],
    all: bool = False,
    limit: int = -1,
    filters: dict[str, list[str]] | None = None,
) -> list[Container]:
    """Return the containers ``docker ps`` would show, newest first."""
    filters = {name: values for name, values in (filters or {}).items() if values}
    unknown = sorted(set(filters) - set(_MATCHERS))
    if unknown:
        raise InvalidArgument(
            f"invalid filter '{unknown[0]}': containers support {', '.join(_MATCHERS)}"
        )
    # Like docker, a limit or a status or exit-code filter also considers stopped ones.
    show_all = all or limit > 0 or "status" in filters or "exited" in filters
    selected = sorted(containers, key=lambda container: container.created, reverse=True)
    if not show_all:
        selected = [container for container in selected if container.running]
    for name, values in filters.items():
        matcher = _MATCHERS[name]
        selected = [c for c in selected if any(matcher(c, value) for value in values)]
    return selected[:limit] if limit > 0 else selected
