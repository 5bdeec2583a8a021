"""Container names: validation of names users give and generation of adjective_noun names.

Docker gives an unnamed container a random ``adjective_surname`` name. ketch does the
same with its own nautical word lists, so generated names look familiar to docker users
without being docker's.
"""

from __future__ import annotations

import re
import secrets

from ketch.errors import InvalidArgument

# Docker's rule for container names, with an optional leading slash because the API
# stores and returns names as "/name".
_VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_ADJECTIVES = (
    "amber", "azure", "bold", "breezy", "brisk", "calm", "coral", "crisp", "daring", "eager",
    "fair", "foggy", "gentle", "golden", "hardy", "jolly", "keen", "lively", "lucky", "merry",
    "misty", "nimble", "patient", "proud", "quick", "quiet", "salty", "silver", "snug",
    "steady", "stormy", "sturdy", "sunny", "swift", "tidal", "tidy", "trusty", "windward",
    "wise", "zesty",
)  # fmt: skip

_NOUNS = (
    "anchor", "beacon", "bowsprit", "buoy", "capstan", "cleat", "compass", "cutter", "davit",
    "dinghy", "galley", "gunwale", "halyard", "harbor", "hull", "jib", "keel", "lantern",
    "lighthouse", "mainsail", "mast", "mooring", "oar", "pennant", "pier", "porthole",
    "rudder", "schooner", "sextant", "skiff", "sloop", "spinnaker", "tiller", "topsail",
    "transom", "wharf", "yawl",
)  # fmt: skip


def normalize_name(name: str) -> str:
    """Return ``name`` in the API's stored form "/name", or raise InvalidArgument."""
    if not _VALID_NAME.match(name):
        raise InvalidArgument(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name if name.startswith("/") else "/" + name


def generate_name(names_in_use: set[str]) -> str:
    """Return an unused "/adjective_noun" name, with a number appended after collisions."""
    for attempt in range(100):
        name = f"/{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if attempt >= 10:
            name += str(secrets.randbelow(100))
        if name not in names_in_use:
            return name
    # 100 random draws all taken means thousands of containers, so a random suffix is fine.
    return f"/{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}{secrets.token_hex(4)}"


def generate_id(ids_in_use: set[str]) -> str:
    """Return a new 64-hex container id.

    Docker avoids ids whose 12-character short form is all digits, because a CLI could
    read such a prefix as a number, so ketch draws again in that case.
    """
    while True:
        container_id = secrets.token_hex(32)
        if container_id[:12].isdigit() or container_id in ids_in_use:
            continue
        return container_id
