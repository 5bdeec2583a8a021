"""Network setup inside the container's own network namespace: bring up loopback.

A new network namespace starts with ``lo`` down, and programs expect 127.0.0.1 to work.
"""

from __future__ import annotations

import fcntl
import struct

from ketch.errors import SystemFailure
from ketch.runtime import sockets

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_SIZE = 40  # struct ifreq: 16-byte name, then a 24-byte union


def bring_up_loopback() -> None:
    request = struct.pack("16sh", b"lo", 0).ljust(_IFREQ_SIZE, b"\0")
    try:
        sock = sockets.new_socket(sockets.AF_INET, sockets.SOCK_DGRAM)
        try:
            current = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
            flags = struct.unpack_from("16sh", current)[1]
            update = struct.pack("16sh", b"lo", flags | IFF_UP).ljust(_IFREQ_SIZE, b"\0")
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, update)
        finally:
            sock.close()
    except OSError as error:
        raise SystemFailure(f"cannot bring up lo in the container: {error.strerror}") from None
