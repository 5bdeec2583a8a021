"""Packages that ketchd loads on first use rather than at start, to keep its memory small.

ketchd is one process for all containers, so what it imports at start is a fixed cost
that every container shares. The registry client (``ketch.images.registry``) brings in
aiohttp and yarl, about 14 MiB of ketchd's memory by ``/proc/PID/smaps_rollup`` on Python
3.11, yet only pull, push, login and search use them. The image store imports the registry
client at module level, so before anything imports these packages ketchd puts a stand-in
module for each into ``sys.modules``. ``import aiohttp`` then binds the stand-in, and the
first attribute read from it (``aiohttp.ClientSession`` in the first registry request)
imports the real package, which replaces the stand-in in ``sys.modules``.

importlib's LazyLoader does not work here: on Python 3.11 an ``import`` statement reads the
module's ``__spec__``, and any attribute read runs a LazyLoader module's code at once.

pyroute2 and dnspython, the other large packages, are imported at their call sites
instead (``ketch.network.links``, ``ketch.network.dns``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

# The packages that only the registry client uses.
REGISTRY_CLIENT_PACKAGES = ("aiohttp", "yarl")


class DeferredModule(types.ModuleType):
    """A stand-in in ``sys.modules`` that imports the real module at its first attribute
    read and from then on holds a copy of the real module's attributes."""

    # A stand-in has no ``__path__``, so that importing a submodule reads that attribute
    # through ``__getattr__`` and imports the real package first.

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._lock = threading.Lock()

    def __getattr__(self, attribute: str) -> Any:
        # Only reached for attributes missing from the stand-in's own dictionary.
        module = self._load()
        return getattr(module, attribute)

    def _load(self) -> types.ModuleType:
        # The lock makes a second thread wait for the import instead of starting another.
        with self._lock:
            name = self.__name__
            if sys.modules.get(name) is self:
                del sys.modules[name]
            try:
                module = importlib.import_module(name)
            except BaseException:
                sys.modules.setdefault(name, self)
                raise
            # Module code that bound the stand-in (``import aiohttp`` at the top of a
            # module) finds every attribute in its dictionary from now on.
            self.__dict__.update(module.__dict__)
            return module


def defer_imports(names: tuple[str, ...] = REGISTRY_CLIENT_PACKAGES) -> None:
    """Put a ``DeferredModule`` into ``sys.modules`` for each of ``names`` that is not
    imported yet. A package that is not installed is left alone, so that the import that
    needs it fails with the usual ModuleNotFoundError."""
    for name in names:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        sys.modules[name] = DeferredModule(name)


def is_loaded(name: str) -> bool:
    """Return whether module ``name`` is imported for real, not only as a stand-in."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, DeferredModule)
