"""The ``ketch`` command line: docker's commands and flags over the Engine API.

``main`` parses the global options and imports only the module of the command in hand
(``run``, ``pull``, ``images``, ``ps``, ``rm``, ``version``), because Python's start-up
and imports are most of a short command's wall time. ``client`` is the HTTP/1.1 client
for the daemon's unix socket, ``autostart`` starts ketchd when none responds, ``options``
parses flags the way docker does, and ``progress`` and ``humanize`` format output.
"""
