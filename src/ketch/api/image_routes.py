"""The image routes beyond pull, list and inspect: tag, remove, history, prune, push,
auth, save (get), load and import, served by ``engine.image_operations``.

Push, load and import reply with JSON lines in a chunked body, as dockerd does; save
replies with the tar stream. The server spools the request body of load and import to
a temporary file before the handler runs, so its size is bounded only by the disk.
"""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ketch.api import streams
from ketch.errors import InvalidArgument

if TYPE_CHECKING:
    from ketch.api.routes import Call

TAR = "application/x-tar"


async def tag_image(call: Call) -> None:
    query = call.request.query
    call.engine.image_operations.tag(
        call.parameters["name"], query.get("repo", "").strip(), query.get("tag", "").strip()
    )
    await call.http.send(201, b"")


async def remove_image(call: Call) -> None:
    # Limitation: 'noprune' is accepted and ignored because images have no parent images.
    result = call.engine.image_operations.remove(call.parameters["name"], call.flag("force"))
    await call.http.send_json(200, result)


async def image_history(call: Call) -> None:
    await call.http.send_json(200, call.engine.image_operations.history(call.parameters["name"]))


async def prune_images(call: Call) -> None:
    from ketch.api.routes import parse_filters

    filters = parse_filters(call.request.query.get("filters", ""))
    await call.http.send_json(200, call.engine.image_operations.prune(filters))


async def push_image(call: Call) -> None:
    name = call.parameters["name"]
    tag = call.request.query.get("tag", "").strip()
    registry_auth = call.request.headers.get("x-registry-auth", "")

    def start(progress: streams.ProgressCallback) -> Any:
        return call.engine.image_operations.push(name, tag, registry_auth, progress)

    await streams.stream_progress_of(call, start, f"push of {name}")


async def login(call: Call) -> None:
    result = await call.engine.image_operations.login(call.request.json_body())
    await call.http.send_json(200, result)


async def save_images(call: Call) -> None:
    names = [value for key, value in _query_pairs(call) if key == "names"]
    await _send_saved(call, names)


async def save_image(call: Call) -> None:
    await _send_saved(call, [call.parameters["name"]])


async def _send_saved(call: Call, names: list[str]) -> None:
    if not names:
        raise InvalidArgument("missing 'names' parameter: the images to save")
    # The archive is spooled to a file first so that an error is still a plain HTTP error.
    with tempfile.TemporaryFile(dir=call.engine.data_root) as spool:
        await call.engine.image_operations.save(names, spool)
        spool.seek(0)
        await call.http.start_stream(200, TAR)
        while chunk := spool.read(streams.COPY_SIZE):
            await call.http.send_chunk(chunk)
    await call.http.end_stream()


async def load_images(call: Call) -> None:
    if not call.request.has_body():
        raise InvalidArgument("empty request body: expected a docker save or OCI archive")
    lines = await call.engine.image_operations.load(call.request.body_stream())
    await _send_json_lines(call, [{"stream": line + "\n"} for line in lines])


async def create_image(call: Call) -> None:
    """Serve ``POST /images/create``: a pull, or an import when ``fromSrc`` is given."""
    source = call.request.query.get("fromSrc", "")
    if not source:
        await streams.pull_image(call)
        return
    if source != "-":
        raise InvalidArgument(
            f"invalid fromSrc {source!r}: only '-' (the tarball in the request body) is supported"
        )
    if not call.request.has_body():
        raise InvalidArgument("empty request body: expected a rootfs tarball to import")
    changes = [value for key, value in _query_pairs(call) if key == "changes" and value]
    query = call.request.query
    image_id = await call.engine.image_operations.import_rootfs(
        call.request.body_stream(),
        query.get("repo", "").strip(),
        query.get("tag", "").strip(),
        changes,
        query.get("message", ""),
    )
    await _send_json_lines(call, [{"status": image_id}])


async def commit_container(call: Call) -> None:
    # Imported at the first commit request, to keep it out of ketchd's start.
    from ketch.engine import commits

    query = call.request.query
    reference = query.get("container", "").strip()
    if not reference:
        raise InvalidArgument("missing 'container' parameter: the container to commit")
    changes = [value for key, value in _query_pairs(call) if key == "changes" and value]
    # As in dockerd, a commit pauses the container unless the client sends pause=false.
    pause = "pause" not in query or call.flag("pause")
    image_id = await commits.commit_container(
        call.engine, reference, query, changes, call.request.json_body(), pause
    )
    await call.http.send_json(201, {"Id": image_id})


async def container_changes(call: Call) -> None:
    changes = call.engine.image_operations.changes(call.parameters["id"], call.engine.data_root)
    await call.http.send_json(200, changes)


async def _send_json_lines(call: Call, messages: list[dict[str, Any]]) -> None:
    await call.http.start_stream(200)
    data = b"".join(json.dumps(message).encode() + streams.LINE_END for message in messages)
    if data:
        await call.http.send_chunk(data)
    await call.http.end_stream()


def _query_pairs(call: Call) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(call.request.target).query, keep_blank_values=True)
