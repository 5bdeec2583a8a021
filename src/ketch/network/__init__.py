"""Container networking: the bridge driver, its address management and its records.

``bridge.BridgeDriver`` is the entry point. It makes the default ``bridge`` network (a
Linux bridge, ``ketch0``) on first use. It connects a container by pinning a network
namespace for it, making a veth pair between the bridge and that namespace, and
configuring ``eth0`` inside. State lives in the engine's SQLite database, in the
``network_`` tables (see ``store``).
"""
