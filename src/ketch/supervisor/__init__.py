"""The supervisor: one long-lived process that creates, watches and reaps every container.

It keeps each container's stdio pipes and json-file log, records exit codes under the exec
root, and serves the engine over ``<exec_root>/supervisor.sock``. ketchd talks to it with
:class:`ketch.supervisor.client.SupervisorClient`; ``ensure_supervisor`` in the same module
starts it. Modules:

- ``protocol``: the message table, framing and error mapping;
- ``server``: the process, its event loop and the operations;
- ``container``, ``stdio``, ``connection``, ``eventloop``, ``process``: the parts the
  server is made of;
- ``logs``: the json-file log writer; ``records``: the records on disk;
- ``client``: the asyncio client.

This package imports nothing itself, so that the supervisor process does not load asyncio
and a client does not load the server.
"""
