"""Values and functions of the Go templates in ``ketch.cli.template``.

Values print as Go's ``%v`` prints decoded JSON (``[a b]``, ``map[k:v]``, ``<nil>``), and
are true or false as in Go. The functions are Go's builtins that docker users write
(``index``, ``printf``, ``eq``...) and the ones docker adds (``json``, ``join``,
``lower``...).
"""

from __future__ import annotations

import json

from ketch.errors import InvalidArgument

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable

NO_VALUE = "<no value>"


class TemplateError(InvalidArgument):
    """The template does not parse, or executing it failed on an item."""


class _NoValue:
    """A missing map key: prints ``<no value>``, is false, and compares like nil."""

    def __repr__(self) -> str:
        return NO_VALUE

    def __bool__(self) -> bool:
        return False


NO_VALUE_MARKER = _NoValue()


# -- values ---------------------------------------------------------------------------


def is_true(value: object) -> bool:
    """Go's truth: false, 0, nil, and empty strings, lists and maps are false."""
    if value is None or value is NO_VALUE_MARKER:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def format_value(value: object) -> str:
    """Print a value as Go's ``%v`` prints the decoded JSON (``[a b]``, ``map[k:v]``)."""
    if value is NO_VALUE_MARKER:
        return NO_VALUE
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        entries = (f"{key}:{format_value(value[key])}" for key in sorted(value))
        return "map[" + " ".join(entries) + "]"
    return str(value)


def _format_float(value: float) -> str:
    """Format as Go's ``%v`` for float64: shortest digits, exponent from 1e21 up."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}e{sign}{abs(int(exponent)):02d}"
    return text


def to_json(value: object) -> str:
    """Encode as docker's ``json`` function does: compact, no HTML escaping."""
    if value is NO_VALUE_MARKER:
        value = None
    if hasattr(value, "to_json"):
        value = value.to_json()  # type: ignore[union-attr]
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: object) -> object:
    if value is NO_VALUE_MARKER:
        return None
    if hasattr(value, "to_json"):
        return value.to_json()  # type: ignore[union-attr]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


# -- functions ------------------------------------------------------------------------


def _index(value: object, *keys: object) -> object:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, NO_VALUE_MARKER)  # type: ignore[call-overload]
        elif isinstance(value, (list, tuple, str)):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise TemplateError(f"template: error calling index: index out of range: {key}")
            value = value[key]
        elif value is None or value is NO_VALUE_MARKER:
            raise TemplateError("template: error calling index: index of untyped nil")
        else:
            raise TemplateError(
                f"template: error calling index: can't index item of type {type(value).__name__}"
            )
    return value


def _slice(value: object, *bounds: int) -> object:
    if not isinstance(value, (list, tuple, str)):
        raise TemplateError(
            f"template: error calling slice: can't slice item of type {type(value).__name__}"
        )
    return value[slice(*bounds)] if bounds else value


def _length(value: object) -> int:
    if isinstance(value, (list, tuple, dict, str)):
        return len(value)
    raise TemplateError(f"template: error calling len: len of type {type(value).__name__}")


def _comparable(value: object) -> object:
    return None if value is NO_VALUE_MARKER else value


def _equal(first: object, *others: object) -> bool:
    if not others:
        raise TemplateError("template: error calling eq: missing argument for comparison")
    return any(_comparable(first) == _comparable(other) for other in others)


def _ordered(
    name: str, first: object, second: object, test: Callable[[object, object], bool]
) -> bool:
    numbers = (int, float)
    same = isinstance(first, numbers) and isinstance(second, numbers)
    if not same and not (isinstance(first, str) and isinstance(second, str)):
        raise TemplateError(f"template: error calling {name}: incompatible types for comparison")
    return test(first, second)


def _go_print(*values: object) -> str:
    # Go's Sprint puts a space between operands when neither is a string.
    text = ""
    for index, value in enumerate(values):
        if index and not isinstance(value, str) and not isinstance(values[index - 1], str):
            text += " "
        text += format_value(value)
    return text


def go_sprintf(pattern: str, *values: object) -> str:
    """Format as Go's ``fmt.Sprintf`` for the verbs templates use: v s q d t f x %."""
    output = []
    position = 0
    remaining = list(values)
    while position < len(pattern):
        char = pattern[position]
        if char != "%":
            output.append(char)
            position += 1
            continue
        end = position + 1
        while end < len(pattern) and pattern[end] in "-+# 0123456789.":
            end += 1
        if end >= len(pattern):
            output.append("%!(NOVERB)")
            break
        flags, verb = pattern[position + 1 : end], pattern[end]
        position = end + 1
        if verb == "%":
            output.append("%")
            continue
        if not remaining:
            output.append(f"%!{verb}(MISSING)")
            continue
        output.append(_format_verb(flags, verb, remaining.pop(0)))
    if remaining:
        extra = ", ".join(f"{type(value).__name__}={format_value(value)}" for value in remaining)
        output.append(f"%!(EXTRA {extra})")
    return "".join(output)


def _format_verb(flags: str, verb: str, value: object) -> str:
    width_flags = flags.replace("+", "").replace("#", "")
    if verb in "dxXo" and isinstance(value, int) and not isinstance(value, bool):
        return (
            f"{value:{width_flags.replace('-', '<')}{verb}}"
            if "-" in width_flags
            else f"{value:{width_flags}{verb}}"
        )
    if verb in "feEgG" and isinstance(value, (int, float)) and not isinstance(value, bool):
        spec = width_flags if "." in width_flags or verb != "f" else width_flags + ".6"
        return f"{float(value):{spec.replace('-', '<')}{verb}}"
    if verb == "q":
        text = to_json(value if isinstance(value, str) else format_value(value))
    elif verb in "vst":
        text = format_value(value)
    else:
        return f"%!{verb}({type(value).__name__}={format_value(value)})"
    return _pad_to_width(text, width_flags)


def _pad_to_width(text: str, flags: str) -> str:
    left = "-" in flags
    digits = flags.replace("-", "").replace("0", "", 1) if flags else ""
    width_text, _, precision = digits.partition(".")
    if precision:
        text = text[: int(precision)]
    width = int(width_text) if width_text else 0
    return text.ljust(width) if left else text.rjust(width)


def _join(values: object, separator: str) -> str:
    if not isinstance(values, (list, tuple)):
        raise TemplateError(
            f"template: error calling join: expected a list, got {format_value(values)}"
        )
    return separator.join(format_value(value) for value in values)


def _truncate(value: object, length: int) -> str:
    text = format_value(value)
    return text[:length]


def _pad(value: object, before: int, after: int) -> str:
    return " " * before + format_value(value) + " " * after


def _title(value: object) -> str:
    text = format_value(value)
    return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))


def _urlquery(*values: object) -> str:
    from ketch.cli.client import encode_query

    return encode_query({"": _go_print(*values)})[1:].replace("%20", "+")


FUNCTIONS: dict[str, Callable] = {
    "and": lambda *values: values[-1],  # evaluated lazily in _run_logic
    "or": lambda *values: values[-1],
    "not": lambda value: not is_true(value),
    "len": _length,
    "index": _index,
    "slice": _slice,
    "print": _go_print,
    "printf": go_sprintf,
    "println": lambda *values: " ".join(format_value(value) for value in values) + "\n",
    "eq": _equal,
    "ne": lambda first, second: not _equal(first, second),
    "lt": lambda a, b: _ordered("lt", a, b, lambda x, y: x < y),  # type: ignore[operator]
    "le": lambda a, b: _ordered("le", a, b, lambda x, y: x <= y),  # type: ignore[operator]
    "gt": lambda a, b: _ordered("gt", a, b, lambda x, y: x > y),  # type: ignore[operator]
    "ge": lambda a, b: _ordered("ge", a, b, lambda x, y: x >= y),  # type: ignore[operator]
    "urlquery": _urlquery,
    "json": to_json,
    "join": _join,
    "split": lambda text, separator: format_value(text).split(separator),
    "lower": lambda value: format_value(value).lower(),
    "upper": lambda value: format_value(value).upper(),
    "title": _title,
    "pad": _pad,
    "truncate": _truncate,
}
