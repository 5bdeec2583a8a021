"""Parse and write JSON without importing :mod:`json`, for the short ``ketch-runc`` verbs.

``json`` imports ``re``, which brings in ``enum``, ``functools`` and ``collections``.
Together they took 3.5 ms of the imports of one ``ketch-runc start`` (``python -X
importtime`` on the loaded 2-core test machine, Python 3.11), which runs for about 20 ms
in all. start and delete only read state.json, and state prints it, so :func:`loads`
calls the C scanner that ``json`` itself is built on (CPython's ``_json`` extension) and
:func:`dumps` writes strings with that module's encoder. Both fall back to ``json``
where that extension is missing, as on other Python implementations, and :func:`dumps`
also for values other than dicts, lists, strings, integers, booleans and None.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
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


class _Unsupported(Exception):
    """A value that only :func:`json.dumps` writes, such as a float or a tuple."""


def dumps(value: Any, indent: int | None = None) -> str:
    """Return ``value`` as the text ``json.dumps(value, indent=indent)`` returns."""
    try:
        from _json import encode_basestring_ascii
    except ImportError:
        encode_basestring_ascii = None
    if encode_basestring_ascii is not None:
        parts: list[str] = []
        try:
            _write(value, parts, encode_basestring_ascii, indent, 0)
        except _Unsupported:
            pass
        else:
            return "".join(parts)
    import json

    return json.dumps(value, indent=indent)


def _write(
    value: Any, parts: list[str], quote: Callable[[str], str], indent: int | None, level: int
) -> None:
    if isinstance(value, str):
        parts.append(quote(value))
    elif value is None or isinstance(value, bool):
        parts.append({None: "null", True: "true", False: "false"}[value])
    elif type(value) is int:
        parts.append(int.__repr__(value))
    elif type(value) in (dict, list):
        _write_container(value, parts, quote, indent, level)
    else:
        raise _Unsupported(type(value).__name__)


def _write_container(
    value: dict[str, Any] | list[Any],
    parts: list[str],
    quote: Callable[[str], str],
    indent: int | None,
    level: int,
) -> None:
    is_dict = isinstance(value, dict)
    opening, closing = ("{", "}") if is_dict else ("[", "]")
    if not value:
        parts.append(opening + closing)
        return
    # json.dumps puts each item on a line of its own when given an indent, and then ends
    # items with "," instead of ", ".
    if indent is None:
        separator, before_item, before_closing = ", ", "", ""
    else:
        before_item = "\n" + " " * (indent * (level + 1))
        separator, before_closing = ",", "\n" + " " * (indent * level)
    parts.append(opening)
    entries = value.items() if is_dict else enumerate(value)
    for index, (key, item) in enumerate(entries):
        if index:
            parts.append(separator)
        parts.append(before_item)
        if is_dict:
            if not isinstance(key, str):
                raise _Unsupported(f"key {type(key).__name__}")
            parts.append(quote(key) + ": ")
        _write(item, parts, quote, indent, level + 1)
    parts.append(before_closing + closing)
