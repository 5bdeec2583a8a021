"""Log options: ``HostConfig.LogConfig`` and the daemon's ``log-driver`` and ``log-opts``.

ketch has one log driver, ``json-file``, with Docker's rotation options:

- ``max-size``: rotate once the log would pass this size. A number of bytes with an
  optional unit ``k``, ``m`` or ``g`` (powers of 1024, as Docker reads them), or ``-1`` for
  no limit.
- ``max-file``: how many files to keep, the log included (a positive integer, default 1).
  With 1 the log is truncated when it reaches ``max-size``. It needs ``max-size``.

Unlike dockerd, whose json-file logs grow without bound unless told otherwise, ketchd
rotates by default at ``DEFAULT_LOG_OPTS`` (10 MiB per file, 3 files, so at most about
30 MiB per container). A container created without log options gets the daemon's.
"""

from __future__ import annotations

import re
from typing import Any

from ketch.errors import InvalidArgument

LOG_DRIVER = "json-file"
DEFAULT_LOG_OPTS: dict[str, str] = {"max-size": "10m", "max-file": "3"}

# Options Docker's json-file driver also takes that ketch does not implement. They are
# rejected rather than ignored, so nobody relies on a label or tag that is not written.
_UNSUPPORTED_OPTS = ("compress", "labels", "labels-regex", "env", "env-regex", "tag")

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, name: str = "max-size") -> int:
    """Parse a size such as ``10m`` into bytes; ``-1`` gives 0, meaning no limit."""
    if text.strip() == "-1":
        return 0
    match = _SIZE.match(text.strip())
    if match is None:
        raise InvalidArgument(
            f"invalid log opt {name}={text!r}: expected a size such as 10m, 512k or 1g, or -1"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def check_log_opts(opts: dict[str, Any], where: str) -> dict[str, str]:
    """Check json-file options and return them; raise InvalidArgument naming ``where``."""
    for key, value in opts.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"invalid {where}: the value of {key!r} must be a string")
        if key in _UNSUPPORTED_OPTS:
            raise InvalidArgument(
                f"invalid {where}: log opt {key!r} of the json-file driver is not supported "
                "by ketch; expected max-size or max-file"
            )
        if key not in ("max-size", "max-file"):
            raise InvalidArgument(
                f"invalid {where}: unknown log opt {key!r} for json-file log driver"
            )
    rotation(opts)
    return dict(opts)


def check_log_driver(name: str, where: str) -> str:
    """Return the driver name when ketch has it (json-file, or empty for the default)."""
    if name not in ("", LOG_DRIVER):
        raise InvalidArgument(
            f"invalid {where}: log driver {name!r} is not supported; expected {LOG_DRIVER!r}"
        )
    return LOG_DRIVER


def rotation(opts: dict[str, str]) -> tuple[int, int]:
    """Return ``(max_size, max_files)`` in bytes and files for checked options."""
    max_size = parse_size(opts["max-size"]) if "max-size" in opts else 0
    text = opts.get("max-file", "1")
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"invalid log opt max-file={text!r}: expected a positive integer")
    max_files = int(text)
    if max_files > 1 and not max_size:
        raise InvalidArgument("invalid log opt max-file: it takes effect only with max-size set")
    return max_size, max_files
