"""The ``ketch`` command line: docker's commands and flags over the Engine API.

``main`` parses the global options and imports only the module of the command in hand,
because Python's start-up and imports are most of a short command's wall time. Most
modules contain one command (``run``, ``ps``, ``logs``...). A few contain a family of
small ones: ``lifecycle`` (stop, kill, restart, pause, unpause, wait, rename),
``imagecmds``, ``transfer``, ``system``, ``stats`` and ``login``.

``containerflags`` turns the flags of ``run`` and ``create`` into a create body.
``client`` is the HTTP/1.1 client for the daemon's unix socket, ``autostart`` starts
ketchd when none responds, and ``options`` parses flags the way docker does.
``template`` and ``formatter`` implement ``--format``, and ``progress`` and ``humanize``
format output.
"""
