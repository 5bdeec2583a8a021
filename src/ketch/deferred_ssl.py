"""ssl for ketchd only once a TLS connection needs it.

asyncio imports ssl whenever it can (CPython 3.11: ``asyncio.base_events``,
``asyncio.selector_events`` and ``asyncio.sslproto`` each try it at import). The ssl module,
libssl and OpenSSL's TLS set-up add about 1.4 MiB to ketchd's resident memory (measured
with 5 containers running: 30.7 against 29.3 MiB RSS). A ketchd that serves only its unix
socket and talks only to plain-HTTP registries, or imports its images, never uses any of it.

``leave_out`` runs first in the ``ketchd`` command, before anything imports asyncio, and
makes ``import ssl`` fail there, which those modules take as "no ssl". Code that needs
TLS calls ``load`` instead of ``import ssl``. It imports ssl for real and hands it to those
three modules, which look the name up each time they use it. Where ssl was never
left out (tests, the CLI, ``python -m ketch.engine.daemon``), ``load`` is a plain import.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

# The asyncio modules that bind ``ssl`` at import time, or None in its place.
_ASYNCIO_MODULES_WITH_SSL = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")

_left_out = False
# Serializes load(). Without it, a thread that removed the None entry after another thread
# had imported ssl would remove the real module, and asyncio and the callers would end up
# with two different ssl modules.
_load_lock = threading.Lock()


def leave_out() -> bool:
    """Make ``import ssl`` raise ImportError in this process until ``load`` is called.

    Does nothing and returns False once asyncio or ssl is imported, because asyncio would
    then keep the real module.
    """
    global _left_out

    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return False
    # A None entry in sys.modules makes the import system raise ImportError for the name.
    sys.modules["ssl"] = None  # type: ignore[assignment]
    _left_out = True
    return True


def load() -> ModuleType:
    """Import ssl and return it, letting asyncio use it if ``leave_out`` kept it out."""
    global _left_out

    with _load_lock:
        if _left_out and "ssl" in sys.modules and sys.modules["ssl"] is None:
            del sys.modules["ssl"]
        _left_out = False

        import ssl

        _give_asyncio(ssl)
    return ssl


def _give_asyncio(ssl: ModuleType) -> None:
    for name in _ASYNCIO_MODULES_WITH_SSL:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            module.ssl = ssl  # type: ignore[attr-defined]

    # sslproto defines its retry errors only when it found ssl at import.
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and not hasattr(sslproto, "SSLAgainErrors"):
        sslproto.SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # type: ignore[attr-defined]
