"""ketch: a container engine that does Docker's job and fits into Docker's world.

One package per layer, top to bottom: ``cli``, ``api``, ``engine``, ``supervisor``,
``images``, ``runtime``, with ``builder`` and ``compose`` beside the engine. ``linux`` is
the one place where namespace, mount and process-control system calls are made.
"""

__version__ = "0.1.0"
