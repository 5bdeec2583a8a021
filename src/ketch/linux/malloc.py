"""glibc malloc tuning for the long-running processes, ketchd and the supervisor.

glibc serves a request of at least its mmap threshold (128 KiB at first) with a mapping of
its own, returned to the kernel on free. By default it raises that threshold each time such
a mapping is freed, up to 32 MiB on 64-bit systems (mallopt(3)). After one layer's 1 MiB
receive buffers and inflated chunks, every later buffer of that size therefore comes from
the heap of the thread that requested it, and stays resident there after the work is done.
Measured on Debian 12 (glibc 2.36) with a ketchd in a network namespace of its own, an
import of a 1 MB busybox tarball left ketchd 5 MiB larger that way, and a second one 2 MiB
more. With the threshold fixed, the two imports added 0.4 MiB (docs/benchmarks.md).
For a daemon that is mostly idle, the resident size matters more than the page faults of
mapping each large buffer anew.
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameter number, from glibc's <malloc.h>.
M_MMAP_THRESHOLD = -3

# Requests of this size or more get a mapping of their own (glibc starts at 128 KiB).
# Setting it turns off the adjustment upwards.
LARGE_BUFFER_THRESHOLD = 256 * 1024


def map_large_buffers_separately(threshold: int = LARGE_BUFFER_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes, so that freed large buffers go
    back to the kernel.

    Returns False where the C library has no mallopt (musl, for example). That allocator
    then keeps its own behaviour.
    """
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(threshold)))
