"""The API server over a real unix socket, with a fake engine behind it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from ketch import errors
from ketch.api.errors import status_for_error
from support.fake_engine import ServedEngine, serve_fake_engine
from support.raw_http import encode_request, open_socket, read_head, read_reply, request


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes, so the directory is short and under /tmp.
    directory = Path(tempfile.mkdtemp(prefix="ketch-api-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def served(socket_dir: Path) -> Iterator[ServedEngine]:
    with serve_fake_engine(socket_dir / "api.sock") as served:
        served.engine.add_image("busybox:latest")
        yield served


def create(served: ServedEngine, cmd: list[str], **host_config: object) -> str:
    body = {"Image": "busybox", "Cmd": cmd, "HostConfig": host_config}
    reply = request(served.socket_path, "POST", "/containers/create", body)
    assert reply.status == 201, reply.body
    return reply.json()["Id"]


def test_ping_headers(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/_ping")
    assert reply.status == 200
    assert reply.body == b"OK"
    assert reply.headers["api-version"] == "1.45"
    assert reply.headers["ostype"] == "linux"
    assert reply.headers["docker-experimental"] == "false"
    assert reply.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert reply.headers["pragma"] == "no-cache"


def test_ping_head_has_no_body(served: ServedEngine) -> None:
    reply = request(served.socket_path, "HEAD", "/_ping")
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["api-version"] == "1.45"


def test_version_with_and_without_prefix(served: ServedEngine) -> None:
    for target in ("/version", "/v1.24/version", "/v1.41/version", "/v1.45/version"):
        reply = request(served.socket_path, "GET", target)
        assert reply.status == 200, target
        assert reply.json()["ApiVersion"] == "1.45", target


def test_version_prefix_too_old(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/v1.23/version")
    assert reply.status == 400
    assert reply.json()["message"] == (
        "client version 1.23 is too old. Minimum supported API version is 1.24, "
        "please upgrade your client to a newer version"
    )


def test_version_prefix_too_new(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/v1.50/containers/json")
    assert reply.status == 400
    assert reply.json()["message"] == (
        "client version 1.50 is too new. Maximum supported API version is 1.45"
    )


def test_unknown_route_is_404(served: ServedEngine) -> None:
    for method, target in (("GET", "/nothing/here"), ("PUT", "/containers/json")):
        reply = request(served.socket_path, method, target)
        assert reply.status == 404, target
        assert reply.json() == {"message": "page not found"}, target


def test_error_status_mapping() -> None:
    cases = [
        (errors.NotFound("x"), 404),
        (errors.Conflict("x"), 409),
        (errors.InvalidArgument("x"), 400),
        (errors.Forbidden("x"), 403),
        (errors.Unavailable("x"), 500),
        (errors.SystemFailure("x"), 500),
        (KeyError("x"), 500),
    ]
    for error, status in cases:
        assert status_for_error(error) == status, type(error).__name__


def test_not_found_is_404_with_message(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/containers/nope/json")
    assert reply.status == 404
    assert reply.json() == {"message": "No such container: nope"}


def test_conflict_is_409(served: ServedEngine) -> None:
    body = {"Image": "busybox", "Cmd": ["true"]}
    assert request(served.socket_path, "POST", "/containers/create?name=web", body).status == 201
    reply = request(served.socket_path, "POST", "/containers/create?name=web", body)
    assert reply.status == 409
    assert "/web" in reply.json()["message"]


def test_invalid_argument_is_400(served: ServedEngine) -> None:
    container_id = create(served, ["true"])
    reply = request(served.socket_path, "POST", f"/containers/{container_id}/wait?condition=bogus")
    assert reply.status == 400
    assert "bogus" in reply.json()["message"]


def test_engine_bug_is_500(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/images/crash/json")
    assert reply.status == 500
    assert reply.json()["message"] == "internal error: RuntimeError: the fake engine crashed"


def test_malformed_json_body_is_400(served: ServedEngine) -> None:
    reply = request(served.socket_path, "POST", "/containers/create", b'{"Image": "busybox",}')
    assert reply.status == 400
    assert reply.json()["message"].startswith("invalid JSON in request body: ")


def test_empty_create_body_is_400(served: ServedEngine) -> None:
    reply = request(served.socket_path, "POST", "/containers/create", b"")
    assert reply.status == 400
    assert reply.json()["message"] == "config cannot be empty in order to create a container"


def test_create_passes_name_and_body(served: ServedEngine) -> None:
    body = {"Image": "busybox", "Cmd": ["echo", "hi"], "Env": ["A=1"]}
    reply = request(served.socket_path, "POST", "/v1.41/containers/create?name=web", body)
    assert reply.status == 201
    assert reply.json()["Warnings"] == []
    assert served.engine.calls[-1] == ("create_container", (body, "web"))


def test_start_then_304(served: ServedEngine) -> None:
    container_id = create(served, ["sleep"])
    assert request(served.socket_path, "POST", f"/containers/{container_id}/start").status == 204
    reply = request(served.socket_path, "POST", f"/containers/{container_id}/start")
    assert reply.status == 304
    assert reply.body == b""


def test_stop_running_then_304(served: ServedEngine) -> None:
    container_id = create(served, ["sleep"])
    request(served.socket_path, "POST", f"/containers/{container_id}/start")
    assert request(served.socket_path, "POST", f"/containers/{container_id}/stop?t=3").status == 204
    assert served.engine.calls[-1] == ("stop_container", (container_id, 3))
    assert request(served.socket_path, "POST", f"/containers/{container_id}/stop").status == 304


def test_kill_signal_parameter(served: ServedEngine) -> None:
    container_id = create(served, ["sleep"])
    request(served.socket_path, "POST", f"/containers/{container_id}/start")
    reply = request(served.socket_path, "POST", f"/containers/{container_id}/kill?signal=SIGTERM")
    assert reply.status == 204
    assert served.engine.calls[-1] == ("kill_container", (container_id, "SIGTERM"))


def test_kill_numeric_signal_and_default(served: ServedEngine) -> None:
    for query, expected in (("?signal=15", 15), ("", "SIGKILL")):
        container_id = create(served, ["sleep"])
        request(served.socket_path, "POST", f"/containers/{container_id}/start")
        request(served.socket_path, "POST", f"/containers/{container_id}/kill{query}")
        assert served.engine.calls[-1] == ("kill_container", (container_id, expected)), query


def test_delete_force_flag(served: ServedEngine) -> None:
    container_id = create(served, ["sleep"])
    request(served.socket_path, "POST", f"/containers/{container_id}/start")
    assert request(served.socket_path, "DELETE", f"/containers/{container_id}").status == 409
    reply = request(served.socket_path, "DELETE", f"/containers/{container_id}?force=1&v=1")
    assert reply.status == 204
    assert served.engine.calls[-1] == ("remove_container", (container_id, True))


def test_list_containers_query(served: ServedEngine) -> None:
    filters = quote(json.dumps({"status": ["exited"], "name": {"web": True}}))
    reply = request(served.socket_path, "GET", f"/containers/json?all=1&limit=2&filters={filters}")
    assert reply.status == 200
    assert served.engine.calls[-1] == (
        "list_containers", (True, 2, {"status": ["exited"], "name": ["web"]}),
    )  # fmt: skip


def test_list_containers_bad_limit(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/containers/json?limit=many")
    assert reply.status == 400
    assert reply.json()["message"] == "invalid value for 'limit': 'many' is not an integer"


def test_list_containers_bad_filters(served: ServedEngine) -> None:
    reply = request(served.socket_path, "GET", "/containers/json?filters=%7Bnope")
    assert reply.status == 400
    assert reply.json()["message"].startswith("invalid filters parameter '{nope'")


def test_images_list_and_reference_filter(served: ServedEngine) -> None:
    served.engine.add_image("alpine:3.19")
    assert len(request(served.socket_path, "GET", "/images/json").json()) == 2
    filters = quote(json.dumps({"reference": {"busybox": True}}))
    listed = request(served.socket_path, "GET", f"/images/json?filters={filters}").json()
    assert [image["RepoTags"] for image in listed] == [["busybox:latest"]]


def test_image_inspect_name_with_slashes(served: ServedEngine) -> None:
    served.engine.add_image("127.0.0.1:5000/team/app:1.0")
    reply = request(served.socket_path, "GET", "/v1.45/images/127.0.0.1:5000/team/app:1.0/json")
    assert reply.status == 200
    assert reply.json()["RepoTags"] == ["127.0.0.1:5000/team/app:1.0"]


def test_keep_alive_serves_two_requests(served: ServedEngine) -> None:
    with open_socket(served.socket_path) as sock:
        sock.sendall(encode_request("GET", "/_ping"))
        first = read_reply(sock)
        sock.sendall(encode_request("GET", "/version"))
        second = read_reply(sock)
    assert first.body == b"OK"
    assert second.json()["ApiVersion"] == "1.45"


def test_malformed_request_line_is_400(served: ServedEngine) -> None:
    with open_socket(served.socket_path) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status_line, _, _ = read_head(sock)
    assert status_line.startswith("HTTP/1.1 400")


def test_socket_mode_is_0660(served: ServedEngine) -> None:
    assert stat.S_IMODE(os.stat(served.socket_path).st_mode) == 0o660


def test_stale_socket_is_replaced(socket_dir: Path) -> None:
    path = socket_dir / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with serve_fake_engine(path) as served:
        assert request(served.socket_path, "GET", "/_ping").status == 200


def test_live_socket_is_not_taken_over(socket_dir: Path) -> None:
    path = socket_dir / "api.sock"
    with serve_fake_engine(path):
        with pytest.raises(errors.Conflict, match="another process is serving it"):
            with serve_fake_engine(path):
                pass
        assert request(path, "GET", "/_ping").status == 200


def test_regular_file_is_not_replaced(socket_dir: Path) -> None:
    path = socket_dir / "api.sock"
    path.write_text("not a socket")
    with pytest.raises(errors.InvalidArgument, match="exists and is not a socket"):
        with serve_fake_engine(path):
            pass
    assert path.read_text() == "not a socket"


def test_requests_logged_at_debug(served: ServedEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ketch.api.server")
    request(served.socket_path, "GET", "/v1.45/_ping")
    request(served.socket_path, "GET", "/nothing")
    # The server logs after it has sent the reply, so the line may come a moment later.
    deadline = time.monotonic() + 5
    while len(debug_messages(caplog)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    messages = debug_messages(caplog)
    assert messages[0].startswith("GET /v1.45/_ping -> 200 (")
    assert messages[1].startswith("GET /nothing -> 404 (")


def debug_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG]


def test_expect_100_continue(served: ServedEngine) -> None:
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    headers = {"Expect": "100-continue", "Content-Length": str(len(body))}
    with open_socket(served.socket_path) as sock:
        head = encode_request("GET", "/containers/create", headers=headers)
        sock.sendall(head.replace(b"GET ", b"POST ", 1))
        status_line, _, rest = read_head(sock)
        assert status_line == "HTTP/1.1 100 Continue"
        assert rest == b""
        sock.sendall(body)
        reply = read_reply(sock, "POST")
    assert reply.status == 201
