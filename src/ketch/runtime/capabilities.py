"""Capability names and numbers (<linux/capability.h>), and applying process.capabilities.

The numbers are fixed by the kernel ABI; a name the kernel here does not know (above
/proc/sys/kernel/cap_last_cap) is skipped, as runc skips it, so that one config works on
older and newer kernels.
"""

from __future__ import annotations

import errno

from ketch.errors import InvalidArgument
from ketch.linux import syscalls

CAPABILITIES = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


def check_names(capabilities: dict[str, list[str]] | None) -> None:
    for set_name, names in (capabilities or {}).items():
        for name in names:
            if name not in CAPABILITIES:
                raise InvalidArgument(
                    f"invalid config.json: process.capabilities.{set_name}: "
                    f"unknown capability {name!r}"
                )


def last_capability() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        return int(handle.read())


def mask(names: list[str], last: int) -> int:
    result = 0
    for name in names:
        number = CAPABILITIES[name]
        if number <= last:
            result |= 1 << number
    return result


def limit_bounding_set(bounding: list[str], last: int) -> None:
    """Drop from the bounding set every capability not in ``bounding``.

    Done before switching the user, while the init still has CAP_SETPCAP.
    """
    keep = mask(bounding, last)
    for number in range(last + 1):
        if not keep & (1 << number):
            syscalls.drop_bounding_capability(number)


def apply_sets(capabilities: dict[str, list[str]], last: int) -> None:
    """Set the effective, permitted and inheritable sets, then raise the ambient ones."""
    syscalls.capset(
        effective=mask(capabilities.get("effective", []), last),
        permitted=mask(capabilities.get("permitted", []), last),
        inheritable=mask(capabilities.get("inheritable", []), last),
    )
    for name in capabilities.get("ambient", []):
        number = CAPABILITIES[name]
        if number > last:
            continue
        try:
            syscalls.raise_ambient_capability(number)
        except OSError as error:
            # The kernel raises an ambient capability only when it is also permitted and
            # inheritable. runc's default config lists ambient ones that are not
            # inheritable and runc ignores the failure, so this does too.
            if error.errno != errno.EPERM:
                raise
