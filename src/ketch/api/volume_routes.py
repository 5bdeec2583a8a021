"""The volume routes: list, create, inspect, remove and prune, served by
``engine.volumes`` (a ``ketch.engine.volumes.VolumeService``) with dockerd's replies.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ketch.api import API_VERSION
from ketch.errors import InvalidArgument

if TYPE_CHECKING:
    from ketch.api.routes import Call

# The API version in a request path such as /v1.41/volumes/prune.
_PATH_VERSION = re.compile(r"^/v(\d+)\.(\d+)/")

# From this Engine API version on, a prune without all=true keeps named volumes.
ANONYMOUS_PRUNE_VERSION = (1, 42)


async def list_volumes(call: Call) -> None:
    from ketch.api.routes import parse_filters

    filters = parse_filters(call.request.query.get("filters", ""))
    volumes = call.engine.volumes.list(filters)
    await call.http.send_json(200, {"Volumes": volumes, "Warnings": []})


async def create_volume(call: Call) -> None:
    body = call.request.json_body() or {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid volume create body: expected a JSON object")
    volume = call.engine.volumes.create(
        name=_string(body, "Name"),
        driver=_string(body, "Driver"),
        options=_string_map(body, "DriverOpts"),
        labels=_string_map(body, "Labels") or {},
    )
    await call.http.send_json(201, call.engine.volumes.view(volume))


async def inspect_volume(call: Call) -> None:
    volumes = call.engine.volumes
    await call.http.send_json(200, volumes.view(volumes.get(call.parameters["name"])))


async def remove_volume(call: Call) -> None:
    call.engine.volumes.remove(call.parameters["name"], force=call.flag("force"))
    await call.http.send(204)


async def prune_volumes(call: Call) -> None:
    from ketch.api.routes import parse_filters

    filters = parse_filters(call.request.query.get("filters", ""))
    if _request_version(call) < ANONYMOUS_PRUNE_VERSION and "all" not in filters:
        filters["all"] = ["true"]
    await call.http.send_json(200, call.engine.volumes.prune(filters))


def _request_version(call: Call) -> tuple[int, int]:
    """Return the API version that the request path names, or the newest for a path without one."""
    match = _PATH_VERSION.match(call.request.path)
    if match is None:
        major, minor = API_VERSION.split(".")
        return (int(major), int(minor))
    return (int(match.group(1)), int(match.group(2)))


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid volume create body: {key} must be a string")
    return value


def _string_map(body: dict[str, Any], key: str) -> dict[str, str] | None:
    value = body.get(key)
    if value is None:
        return None
    valid = isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
    if not valid:
        raise InvalidArgument(
            f"invalid volume create body: {key} must be an object of string values"
        )
    return dict(value)
