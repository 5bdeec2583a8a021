"""Names that keep the network state of several ketchd instances on one host apart.

An instance is known by its data root. Its tag, the first 10 hex digits of the sha256 of
the root's absolute path, is in the ifalias of every link it makes, so that a start deletes
only its own leftover links. Its default bridge and nftables tables are named after it too::

    data root           default bridge      nftables tables
    /var/lib/ketch      ketch0              ip ketch, bridge ketch
    any other root      ketch<tag>          ip ketch-<tag>, bridge ketch-<tag>

ketchd's ``bridge`` setting names the default bridge instead, for any root.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ketch.errors import InvalidArgument

TAG_LENGTH = 10
# The kernel's limit on interface names (IFNAMSIZ - 1 bytes).
MAX_INTERFACE_NAME_BYTES = 15
DEFAULT_BRIDGE = "ketch0"
DEFAULT_TABLE = "ketch"


@dataclass(frozen=True)
class Instance:
    """The network names of one ketchd instance."""

    tag: str
    default_bridge: str = DEFAULT_BRIDGE
    table_name: str = DEFAULT_TABLE


def instance_tag(data_root: Path) -> str:
    """Return the tag of the instance whose data root is ``data_root``."""
    digest = hashlib.sha256(str(data_root.absolute()).encode()).hexdigest()
    return digest[:TAG_LENGTH]


def check_bridge_name(name: str) -> str:
    """Return ``name`` if it can name a Linux bridge, or raise InvalidArgument."""
    if name == "none":
        raise InvalidArgument(
            "invalid bridge none: running without the default bridge is not supported; "
            "leave bridge unset or name an interface"
        )
    size = len(name.encode())
    has_bad_character = any(c in name for c in "/: \t\n")
    if not 0 < size <= MAX_INTERFACE_NAME_BYTES or has_bad_character or name in (".", ".."):
        raise InvalidArgument(
            f"invalid bridge {name!r}: expected an interface name of 1 to "
            f"{MAX_INTERFACE_NAME_BYTES} bytes without '/', ':' or white space"
        )
    return name


def instance_for(data_root: Path, default_root: Path, bridge: str | None = None) -> Instance:
    """Return the network names of the instance with ``data_root``.

    ``default_root`` is ketchd's default data root, whose instance keeps the names of a
    single ketchd (``ketch0``, ``ip ketch``). ``bridge`` overrides the default bridge.
    """
    tag = instance_tag(data_root)
    if data_root.absolute() == default_root.absolute():
        instance = Instance(tag)
    else:
        instance = Instance(tag, default_bridge=f"ketch{tag}", table_name=f"ketch-{tag}")
    if bridge is not None:
        instance = Instance(tag, check_bridge_name(bridge), instance.table_name)
    return instance
