"""The engine behind ketchd: containers, their records, OCI specs and docker-shaped views.

``Engine`` is what the Engine API server calls; ``ketch.engine.daemon`` is the ``ketchd``
entry point that builds one from its configuration and serves it.
"""

from ketch.engine.engine import Engine

__all__ = ["Engine"]
