"""Leases: the blobs and chain IDs that pulls in progress rely on.

A pull holds a lease on each blob and snapshot it uses before it looks for them. The
store's removal and garbage collection leave leased names alone, so removing an image
while another pull of a layer it shares is running does not take the layer away.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class Leases:
    """Blobs and chain IDs that pulls in progress rely on, so removal leaves them alone."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def hold(self, name: str) -> None:
        self._counts[name] += 1

    def release(self, names: Iterable[str]) -> None:
        for name in names:
            self._counts[name] -= 1
            if self._counts[name] <= 0:
                del self._counts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._counts
