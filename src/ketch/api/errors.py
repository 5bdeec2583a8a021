"""The one mapping from ketch's error classes to Engine API status codes and bodies.

dockerd reports every error as ``{"message": "..."}`` with a status code chosen by the
error's kind, and clients branch on that code: the docker CLI pulls an image when create
returns 404, and docker-py raises ``NotFound`` for 404. An unreachable registry is a 500
in dockerd, not a 502 or 503, so ``Unavailable`` is a 500 here too.
"""

from __future__ import annotations

import json

from ketch import errors

_STATUS_BY_ERROR_CLASS: tuple[tuple[type[errors.KetchError], int], ...] = (
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidArgument, 400),
    (errors.Forbidden, 403),
    (errors.Unavailable, 500),
    (errors.SystemFailure, 500),
)


def status_for_error(error: BaseException) -> int:
    """Return the HTTP status code for an error; 500 for anything not a ketch error."""
    for error_class, status in _STATUS_BY_ERROR_CLASS:
        if isinstance(error, error_class):
            return status
    return 500


def message_for_error(error: BaseException) -> str:
    """Return the text for the ``message`` field.

    A ketch error's text is written for the user. Any other exception is a bug in ketch,
    so the message names its type as well, because ``str(KeyError("x"))`` alone is "'x'".
    """
    if isinstance(error, errors.KetchError):
        return str(error)
    return f"internal error: {type(error).__name__}: {error}"


def error_body(message: str) -> bytes:
    """Encode an error message as the Engine API's error body."""
    return json.dumps({"message": message}).encode()
