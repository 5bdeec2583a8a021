"""Parse JSON without importing :mod:`json`, for the short ``ketch-runc`` verbs.

``json`` imports ``re``, which brings in ``enum``, ``functools`` and ``collections``.
Together they took 3.5 ms of the imports of one ``ketch-runc start`` (``python -X
importtime`` on the loaded 2-core test machine, Python 3.11), which runs for about 20 ms
in all. start and delete only read state.json, so :func:`loads` calls the C scanner that ``json``
itself is built on (CPython's ``_json`` extension) and falls back to :func:`json.loads`
where that extension is missing, as on other Python implementations.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


class _ScannerOptions:
    """The attributes ``_json.make_scanner`` reads, set as ``json.loads`` sets them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        # NaN, Infinity and -Infinity, which json.loads accepts too.
        return float(name)


def loads(text: str) -> Any:
    """Return the value of the JSON document ``text``.

    An invalid document raises ValueError, which does not give the position of the fault
    as the error of :func:`json.loads` does.
    """
    try:
        import _json
    except ImportError:
        import json

        return json.loads(text)
    scanner = _json.make_scanner(_ScannerOptions)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = scanner(text, start)
    except StopIteration:
        raise ValueError("invalid JSON document") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("invalid JSON document: extra data after the value")
    return value
