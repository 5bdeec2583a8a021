"""The OCI runtime: containers from OCI bundles, as runc makes them.

``from ketch.runtime import Runtime`` gives the library (:mod:`.lifecycle`);
``ketch-runc`` (:mod:`.cli`) is the runc command line over it. ``Runtime`` is imported
on first use, so that ``ketch.runtime.spec`` and the CLI's light verbs do not pay for
the modules that creating a container needs.
"""

from __future__ import annotations

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.runtime.lifecycle import Runtime

__all__ = ["Runtime"]


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from ketch.runtime.lifecycle import Runtime

        return Runtime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
