"""Container networking: the bridge driver, its address management and its records.

``BridgeDriver`` is the entry point: it makes the default ``bridge`` network (a Linux
bridge, ``ketch0``) on first use, and connects a container by pinning a network namespace
for it, making a veth pair between the bridge and that namespace and configuring ``eth0``
inside. State lives in the engine's SQLite database (``network_`` tables, see ``store``).
"""
