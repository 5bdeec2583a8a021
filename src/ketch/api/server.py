"""The Engine API server: a unix socket, one asyncio task per connection, one dispatcher.

``serve(engine, socket_path)`` prepares the socket file and returns the listening
``asyncio.Server``, which the caller closes. A stale socket file from a crashed daemon is
removed, and a socket that another process serves is an error.

Every request goes through ``dispatch``. It checks and strips the ``/vX.Y`` prefix, and
the route table in ``routes`` picks the handler. Any error the handler raises before its
reply has started is sent as ``{"message": ...}`` with the status from
``errors.status_for_error``: this is the one place where the API reports errors.

The bodies of the routes that ``spools_body`` selects (image and archive tarballs) are
spooled to a temporary file under the engine's data root rather than held in memory.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11

from ketch import deferred_ssl
from ketch.api import API_VERSION, MIN_API_VERSION, routes
from ketch.api.connection import BodyTooLarge, HttpConnection, Request
from ketch.api.errors import error_body, message_for_error, status_for_error
from ketch.errors import Conflict, InvalidArgument, KetchError

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
# Members of this group may use the socket, as members of "docker" may use dockerd's.
SOCKET_GROUP = "ketch"

_VERSION_PREFIX = re.compile(r"^/v(\d+(?:\.\d+)*)(/.*)$")

# Routes whose body is a tarball of any size: image load, image create with fromSrc=-
# (import) and archive put (docker cp into a container). A pull through image create has
# an empty body, so nothing is spooled for it.
SPOOLED_BODY_ROUTES = frozenset({("POST", "/images/load"), ("POST", "/images/create")})
SPOOLED_BODY_PATTERNS = (("PUT", re.compile(r"^/containers/[^/]+/archive$")),)


async def serve(engine: object, socket_path: Path) -> asyncio.Server:
    """Listen on ``socket_path`` and serve the Engine API backed by ``engine``."""
    _remove_stale_socket(socket_path)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(engine, reader, writer)

    server = await asyncio.start_unix_server(on_connection, path=str(socket_path))
    _set_socket_permissions(socket_path)
    log.info("serving the Engine API on unix://%s", socket_path)
    return server


async def serve_tcp(
    engine: object, address: str, port: int, context: ssl.SSLContext | None
) -> asyncio.Server:
    """Listen on ``address:port``, over TLS when ``context`` is given."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(engine, reader, writer)

    if context is None:
        server = await asyncio.start_server(on_connection, host=address, port=port)
    else:
        # ketch runs TLS itself so that a client's close_notify ends only its input,
        # as a FIN does over plain TCP (see ketch.api.tls).
        from ketch.api import tls

        server = await tls.start_server(on_connection, context, address, port)
    scheme = "TLS with client verification" if context is not None else "plain TCP"
    log.info("serving the Engine API on tcp://%s:%d (%s)", address, port, scheme)
    return server


def tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """Return a server TLS context that requires a client certificate signed by the CA."""
    ssl = deferred_ssl.load()

    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as error:
        raise InvalidArgument(f"cannot load the TLS files: {error}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A write in ketch.api.tls fails if a client's TLS 1.2 renegotiation is under way, so
    # clients may not start one. Go's crypto/tls server, which dockerd uses, rejects them too.
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def _remove_stale_socket(socket_path: Path) -> None:
    """Remove a socket file left by a daemon that died; raise Conflict for a live one."""
    try:
        mode = socket_path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise InvalidArgument(f"cannot listen on {socket_path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(socket_path))
    except OSError:
        log.info("removing stale socket %s", socket_path)
        socket_path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise Conflict(f"cannot listen on {socket_path}: another process is serving it")


def _set_socket_permissions(socket_path: Path) -> None:
    os.chmod(socket_path, SOCKET_MODE)
    try:
        group_id = grp.getgrnam(SOCKET_GROUP).gr_gid
    except KeyError:
        return
    os.chown(socket_path, -1, group_id)


async def serve_connection(
    engine: object, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve requests on one connection until the client closes it or a reply ends it."""
    spool_dir = getattr(engine, "data_root", None)
    http = HttpConnection(reader, writer, spools_body=spools_body, spool_dir=spool_dir)
    try:
        while True:
            try:
                request = await http.read_request()
            except h11.RemoteProtocolError as error:
                log.debug("malformed HTTP request: %s", error)
                await http.send_protocol_error(error.error_status_hint, f"bad request: {error}")
                return
            except BodyTooLarge as error:
                await http.send_protocol_error(413, str(error))
                return
            if request is None:
                return
            try:
                await dispatch(engine, request, http)
            finally:
                request.close()
            if not http.start_next_request():
                return
    except ConnectionError as error:
        log.debug("API client went away: %s", error)
    except Exception:
        log.exception("API connection failed; closing it")
    finally:
        await http.close()


async def dispatch(engine: object, request: Request, http: HttpConnection) -> None:
    """Run the handler for one request and report any error it raises."""
    started = time.monotonic()
    try:
        path = strip_version_prefix(request.path)
        match = routes.match_route(request.method, path)
        if match is None:
            await http.send(404, error_body("page not found"))
        else:
            handler, parameters = match
            await handler(routes.Call(engine, request, parameters, http))
    except ConnectionError:
        raise
    except Exception as error:
        await _report_error(request, http, error)
    finally:
        elapsed_ms = (time.monotonic() - started) * 1000
        status = http.response_status or "no reply"
        log.debug("%s %s -> %s (%.1f ms)", request.method, request.target, status, elapsed_ms)


def spools_body(method: str, target: str) -> bool:
    """Return whether the body of this request goes to a temporary file."""
    path = urlsplit(target).path
    match = _VERSION_PREFIX.match(path)
    if match is not None:
        path = match.group(2)
    if (method, path) in SPOOLED_BODY_ROUTES:
        return True
    return any(
        method == spooled and pattern.match(path) for spooled, pattern in SPOOLED_BODY_PATTERNS
    )


def strip_version_prefix(path: str) -> str:
    """Remove a ``/vX.Y`` prefix after checking that ketch serves that API version.

    Raises InvalidArgument with dockerd's wording for a version outside the range.
    """
    match = _VERSION_PREFIX.match(path)
    if match is None:
        return path
    version, rest = match.groups()
    requested = _version_tuple(version)
    if requested < _version_tuple(MIN_API_VERSION):
        raise InvalidArgument(
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    if requested > _version_tuple(API_VERSION):
        raise InvalidArgument(
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )
    return rest


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


async def _report_error(request: Request, http: HttpConnection, error: Exception) -> None:
    status = status_for_error(error)
    message = message_for_error(error)
    if not isinstance(error, KetchError):
        log.exception("%s %s failed", request.method, request.target, exc_info=error)
    elif status >= 500:
        log.error("%s %s failed: %s", request.method, request.target, message)
    if http.response_started:
        # The status line is gone already, so closing is how the client learns of the failure.
        log.warning(
            "%s %s failed after its reply started: %s", request.method, request.target, message
        )
        http.must_close = True
        return
    await http.send(status, error_body(message))
