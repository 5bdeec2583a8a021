"""The route table of the Engine API and the handlers whose replies are plain JSON.

Each route maps a method and a path template to one handler. A handler reads the query
and body, calls the engine, and replies through the ``HttpConnection``. Handlers whose
replies stream (attach, wait, image pull) live in ``streams``. Engine methods that touch
containers' processes or the network are coroutines, and the ones that read state are
plain functions, as the engine defines them.

Query parameters follow dockerd's parsing: a boolean is false when absent, empty, "0",
"no", "false" or "none" (any case) and true otherwise.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ketch.api import image_routes, network_routes, streams, volume_routes
from ketch.api.connection import HttpConnection, Request, decode_path_parameter
from ketch.errors import InvalidArgument

_FALSE_WORDS = frozenset({"", "0", "no", "false", "none"})


@dataclass
class Call:
    """The engine, request, path parameters and connection that a handler works with."""

    engine: Any
    request: Request
    parameters: dict[str, str]
    http: HttpConnection

    def flag(self, name: str) -> bool:
        """Read a boolean query parameter."""
        return self.request.query.get(name, "").strip().lower() not in _FALSE_WORDS

    def integer(self, name: str, default: int | None) -> int | None:
        """Read an integer query parameter; InvalidArgument names it when it is not one."""
        text = self.request.query.get(name, "").strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise InvalidArgument(
                f"invalid value for {name!r}: {text!r} is not an integer"
            ) from None


Handler = Callable[[Call], Awaitable[None]]


async def ping(call: Call) -> None:
    await call.http.send(
        200,
        b"OK",
        content_type="text/plain; charset=utf-8",
        extra_headers=(
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"),
        ),
    )


async def version(call: Call) -> None:
    await call.http.send_json(200, call.engine.version())


async def info(call: Call) -> None:
    await call.http.send_json(200, call.engine.info())


async def create_container(call: Call) -> None:
    body = call.request.json_body()
    if body is None:
        raise InvalidArgument("config cannot be empty in order to create a container")
    if not isinstance(body, dict):
        raise InvalidArgument("invalid container config: the request body must be a JSON object")
    name = call.request.query.get("name") or None
    result = await call.engine.create_container(body, name)
    await call.http.send_json(201, result)


async def list_containers(call: Call) -> None:
    filters = parse_filters(call.request.query.get("filters", ""))
    limit = call.integer("limit", -1)
    # Only a listing with sizes passes the flag, so engines without the parameter work.
    extra = {"size": True} if call.flag("size") else {}
    listing = call.engine.list_containers(
        all=call.flag("all"), limit=limit, filters=filters, **extra
    )
    await call.http.send_json(200, listing)


async def inspect_container(call: Call) -> None:
    await call.http.send_json(200, call.engine.inspect_container(call.parameters["id"]))


async def start_container(call: Call) -> None:
    # The engine returns False when the container was running already (dockerd's 304).
    started = await call.engine.start_container(call.parameters["id"])
    await call.http.send(304 if started is False else 204)


async def stop_container(call: Call) -> None:
    timeout = call.integer("t", None)
    signal = call.request.query.get("signal")
    # Only a stop that names a signal passes one, so engines without the parameter work.
    extra = {"signal": signal} if signal else {}
    # The engine returns False when the container was not running (dockerd's 304).
    stopped = await call.engine.stop_container(call.parameters["id"], timeout=timeout, **extra)
    await call.http.send(304 if stopped is False else 204)


async def restart_container(call: Call) -> None:
    timeout = call.integer("t", None)
    signal = call.request.query.get("signal") or None
    await call.engine.restart_container(call.parameters["id"], timeout=timeout, signal=signal)
    await call.http.send(204)


async def pause_container(call: Call) -> None:
    await call.engine.pause_container(call.parameters["id"])
    await call.http.send(204)


async def unpause_container(call: Call) -> None:
    await call.engine.unpause_container(call.parameters["id"])
    await call.http.send(204)


async def rename_container(call: Call) -> None:
    call.engine.rename_container(call.parameters["id"], call.request.query.get("name", ""))
    await call.http.send(204)


async def update_container(call: Call) -> None:
    body = call.request.json_body()
    result = await call.engine.update_container(call.parameters["id"], body or {})
    await call.http.send_json(200, result)


async def prune_containers(call: Call) -> None:
    filters = parse_filters(call.request.query.get("filters", ""))
    await call.http.send_json(200, await call.engine.prune_containers(filters))


async def create_exec(call: Call) -> None:
    body = call.request.json_body()
    await call.http.send_json(201, call.engine.create_exec(call.parameters["id"], body))


async def inspect_exec(call: Call) -> None:
    await call.http.send_json(200, call.engine.inspect_exec(call.parameters["id"]))


def _terminal_size(call: Call) -> tuple[int, int]:
    height = call.integer("h", None)
    width = call.integer("w", None)
    if height is None or width is None or height < 0 or width < 0:
        raise InvalidArgument("invalid terminal size: h and w must be set to numbers >= 0")
    return height, width


async def resize_exec(call: Call) -> None:
    height, width = _terminal_size(call)
    await call.engine.resize_exec(call.parameters["id"], height, width)
    await call.http.send(200, b"")


async def resize_container(call: Call) -> None:
    height, width = _terminal_size(call)
    await call.engine.resize_container(call.parameters["id"], height, width)
    await call.http.send(200, b"")


async def container_top(call: Call) -> None:
    ps_args = call.request.query.get("ps_args", "")
    await call.http.send_json(200, await call.engine.container_top(call.parameters["id"], ps_args))


async def disk_usage(call: Call) -> None:
    await call.http.send_json(200, call.engine.disk_usage())


async def kill_container(call: Call) -> None:
    text = call.request.query.get("signal", "").strip()
    signal: str | int = int(text) if text.isdigit() else (text or "SIGKILL")
    await call.engine.kill_container(call.parameters["id"], signal=signal)
    await call.http.send(204)


async def remove_container(call: Call) -> None:
    if call.flag("link"):
        raise InvalidArgument("removing a link (link=true) is not supported")
    # Only a removal with 'v' (anonymous volumes too) passes it, so engines without it work.
    volume_options = {"volumes": True} if call.flag("v") else {}
    await call.engine.remove_container(
        call.parameters["id"], force=call.flag("force"), **volume_options
    )
    await call.http.send(204)


async def list_images(call: Call) -> None:
    filters = parse_filters(call.request.query.get("filters", ""))
    images = filter_images(call.engine.list_images(call.flag("shared-size")), filters)
    await call.http.send_json(200, images)


async def inspect_image(call: Call) -> None:
    await call.http.send_json(200, call.engine.inspect_image(call.parameters["name"]))


def parse_filters(text: str) -> dict[str, list[str]]:
    """Parse the ``filters`` parameter into ``{name: [values]}``.

    Clients send ``{"status": ["running"]}``; API versions before 1.22 sent
    ``{"status": {"running": true}}``, which dockerd still accepts, so both forms are read.
    """
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid filters parameter {text!r}: {error}") from None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"invalid filters parameter {text!r}: expected a JSON object")
    filters: dict[str, list[str]] = {}
    for name, values in raw.items():
        if isinstance(values, dict):
            filters[name] = [value for value, enabled in values.items() if enabled]
        elif isinstance(values, list) and all(isinstance(value, str) for value in values):
            filters[name] = list(values)
        else:
            raise InvalidArgument(
                f"invalid filters parameter: the values of {name!r} must be a list of strings"
            )
    return filters


def filter_images(images: list[dict], filters: dict[str, list[str]]) -> list[dict]:
    """Apply the ``reference`` and ``dangling`` filters of ``GET /images/json``.

    A reference pattern matches a tag (``busybox:latest``) or its repository
    (``busybox``) with shell wildcards, as ``docker images busybox`` expects.
    """
    unknown = sorted(set(filters) - {"reference", "dangling"})
    if unknown:
        raise InvalidArgument(f"invalid filter {unknown[0]!r}: images support reference, dangling")
    selected = images
    for pattern in filters.get("reference", []):
        selected = [image for image in selected if _image_matches(image, pattern)]
    for value in filters.get("dangling", []):
        if value not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}': expected true or false")
        dangling = value in ("true", "1")
        selected = [image for image in selected if (not image.get("RepoTags")) == dangling]
    return selected


def _image_matches(image: dict, pattern: str) -> bool:
    for tag in image.get("RepoTags") or []:
        repository = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
        if fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(repository, pattern):
            return True
    return False


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _route(method: str, template: str, handler: Handler) -> Route:
    """Compile a path template: ``{id}`` matches one segment, ``{name*}`` one or more."""
    regex = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", template)
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
    return Route(method, re.compile(f"^{regex}$"), handler)


ROUTES: tuple[Route, ...] = (
    _route("GET", "/_ping", ping),
    _route("HEAD", "/_ping", ping),
    _route("GET", "/version", version),
    _route("GET", "/info", info),
    _route("POST", "/containers/create", create_container),
    _route("GET", "/containers/json", list_containers),
    _route("GET", "/containers/{id}/json", inspect_container),
    _route("POST", "/containers/{id}/start", start_container),
    _route("POST", "/containers/{id}/attach", streams.attach_container),
    _route("POST", "/containers/{id}/wait", streams.wait_container),
    _route("GET", "/containers/{id}/logs", streams.container_logs),
    _route("POST", "/containers/{id}/kill", kill_container),
    _route("POST", "/containers/{id}/stop", stop_container),
    _route("POST", "/containers/{id}/restart", restart_container),
    _route("POST", "/containers/{id}/pause", pause_container),
    _route("POST", "/containers/{id}/unpause", unpause_container),
    _route("POST", "/containers/{id}/rename", rename_container),
    _route("POST", "/containers/{id}/update", update_container),
    _route("POST", "/containers/prune", prune_containers),
    _route("GET", "/events", streams.events),
    _route("GET", "/containers/{id}/stats", streams.container_stats),
    _route("GET", "/containers/{id}/top", container_top),
    _route("GET", "/containers/{id}/archive", streams.archive_get),
    _route("HEAD", "/containers/{id}/archive", streams.archive_head),
    _route("PUT", "/containers/{id}/archive", streams.archive_put),
    _route("GET", "/containers/{id}/export", streams.export_container),
    _route("GET", "/containers/{id}/changes", image_routes.container_changes),
    _route("POST", "/containers/{id}/exec", create_exec),
    _route("POST", "/containers/{id}/resize", resize_container),
    _route("POST", "/exec/{id}/start", streams.start_exec),
    _route("POST", "/exec/{id}/resize", resize_exec),
    _route("GET", "/exec/{id}/json", inspect_exec),
    _route("GET", "/system/df", disk_usage),
    _route("DELETE", "/containers/{id}", remove_container),
    _route("POST", "/images/create", image_routes.create_image),
    _route("GET", "/images/json", list_images),
    _route("POST", "/images/prune", image_routes.prune_images),
    _route("POST", "/images/load", image_routes.load_images),
    _route("GET", "/images/get", image_routes.save_images),
    _route("GET", "/images/{name*}/json", inspect_image),
    _route("GET", "/images/{name*}/history", image_routes.image_history),
    _route("GET", "/images/{name*}/get", image_routes.save_image),
    _route("POST", "/images/{name*}/tag", image_routes.tag_image),
    _route("POST", "/images/{name*}/push", image_routes.push_image),
    _route("DELETE", "/images/{name*}", image_routes.remove_image),
    _route("POST", "/auth", image_routes.login),
    _route("POST", "/commit", image_routes.commit_container),
    _route("GET", "/volumes", volume_routes.list_volumes),
    _route("POST", "/volumes/create", volume_routes.create_volume),
    _route("POST", "/volumes/prune", volume_routes.prune_volumes),
    _route("GET", "/volumes/{name}", volume_routes.inspect_volume),
    _route("DELETE", "/volumes/{name}", volume_routes.remove_volume),
    _route("GET", "/networks", network_routes.list_networks),
    _route("POST", "/networks/create", network_routes.create_network),
    _route("POST", "/networks/prune", network_routes.prune_networks),
    _route("GET", "/networks/{id}", network_routes.inspect_network),
    _route("POST", "/networks/{id}/connect", network_routes.connect_network),
    _route("POST", "/networks/{id}/disconnect", network_routes.disconnect_network),
    _route("DELETE", "/networks/{id}", network_routes.remove_network),
)


def match_route(method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
    """Find the handler for a request; None when the path is not an Engine API route.

    A route of Docker's Engine API that ketch lacks gets ``not_implemented``, which
    answers 501 and names the route.
    """
    for route in ROUTES:
        if route.method != method:
            continue
        match = route.pattern.match(path)
        if match is not None:
            parameters = {
                key: decode_path_parameter(value) for key, value in match.groupdict().items()
            }
            return route.handler, parameters
    template = docker_route_template(method, path)
    if template is not None:
        return not_implemented, {"method": method, "template": template}
    return None


async def not_implemented(call: Call) -> None:
    method, template = call.parameters["method"], call.parameters["template"]
    message = f"ketch does not implement {method} {template} yet"
    await call.http.send_json(501, {"message": message})


def docker_route_template(method: str, path: str) -> str | None:
    """Return the template of the Docker Engine API route that ``path`` matches, if any."""
    for route_method, template, pattern in _docker_route_patterns():
        if route_method == method and pattern.match(path):
            return template
    return None


@functools.cache
def _docker_route_patterns() -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    from ketch.api.docker_paths import DOCKER_ROUTES

    compiled = []
    for method, template in DOCKER_ROUTES:
        # Image, plugin and distribution names contain slashes (library/busybox).
        regex = re.sub(r"\{name\}", "(?P<name>.+)", template)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        compiled.append((method, template, re.compile(f"^{regex}$")))
    return tuple(compiled)
