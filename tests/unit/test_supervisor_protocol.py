"""The supervisor protocol's encoding, request validation, error mapping and framing."""

from __future__ import annotations

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound, SystemFailure
from ketch.supervisor import protocol


def test_message_round_trip() -> None:
    message = {"op": "create", "id": "c1", "open_stdin": False}
    line = protocol.encode_message(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert protocol.decode_message(line) == message


def test_decode_rejects_non_json() -> None:
    with pytest.raises(InvalidArgument, match="not JSON"):
        protocol.decode_message(b"{op: ping\n")


def test_decode_rejects_non_object() -> None:
    with pytest.raises(InvalidArgument, match="expected a JSON object"):
        protocol.decode_message(b"[1, 2]\n")


def test_decode_request_rejects_unknown_op() -> None:
    with pytest.raises(InvalidArgument, match="unknown op 'teleport'"):
        protocol.decode_request(b'{"op": "teleport"}\n')


def test_error_response_names_class() -> None:
    response = protocol.error_response(NotFound("No such container: web"))
    assert response == {"ok": False, "error": "No such container: web", "kind": "NotFound"}


@pytest.mark.parametrize("error_class", [NotFound, Conflict, InvalidArgument, SystemFailure])
def test_check_response_raises_named_class(error_class: type[Exception]) -> None:
    response = protocol.error_response(error_class("the message"))
    with pytest.raises(error_class, match="the message"):
        protocol.check_response(response)


def test_check_response_unknown_kind_is_system_failure() -> None:
    with pytest.raises(SystemFailure, match="odd"):
        protocol.check_response({"ok": False, "error": "odd", "kind": "Surprise"})


def test_check_response_returns_success() -> None:
    response = {"ok": True, "pid": 12}
    assert protocol.check_response(response) is response


def test_frame_header_layout() -> None:
    frame = protocol.encode_frame(protocol.STREAM_STDERR, b"hello\n")
    assert frame[:8] == bytes([2, 0, 0, 0, 0, 0, 0, 6])
    assert frame[8:] == b"hello\n"


def test_frame_length_is_big_endian() -> None:
    frame = protocol.encode_frame(protocol.STREAM_STDOUT, b"x" * 0x10203)
    assert frame[4:8] == bytes([0, 1, 2, 3])


@pytest.mark.parametrize("container_id", ["a", "c1", "x" * 128, "web.1", "a_b-c+d", "0" * 64])
def test_container_id_accepted(container_id: str) -> None:
    assert protocol.require_container_id({"id": container_id}) == container_id


@pytest.mark.parametrize(
    "container_id", ["", ".", "..", ".hidden", "a/b", "../x", "x" * 129, "a b", 7, None]
)
def test_container_id_rejected(container_id: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid container id"):
        protocol.require_container_id({"id": container_id})


@pytest.mark.parametrize("value", ["relative/path", "", 3, None, "/with\0nul"])
def test_absolute_path_rejected(value: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid bundle"):
        protocol.require_absolute_path({"bundle": value}, "bundle")


def test_absolute_path_accepted() -> None:
    path = protocol.require_absolute_path({"bundle": "/var/lib/b"}, "bundle")
    assert str(path) == "/var/lib/b"


def test_optional_bool_default() -> None:
    assert protocol.optional_bool({}, "force", True) is True


def test_optional_bool_rejects_string() -> None:
    with pytest.raises(InvalidArgument, match="invalid force 'yes'"):
        protocol.optional_bool({"force": "yes"}, "force", False)


@pytest.mark.parametrize("value", [0, 65, -9, True, "9", 9.0])
def test_signal_rejected(value: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid signal"):
        protocol.require_signal({"signal": value})


def test_signal_accepted() -> None:
    assert protocol.require_signal({"signal": 9}) == 9
