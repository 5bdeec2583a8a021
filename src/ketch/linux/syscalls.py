"""ctypes bindings for unshare, setns, mount, umount2, pivot_root, prctl and execveat.

Python 3.11 has none of these in ``os`` (``os.unshare`` and ``os.setns`` arrived in 3.12),
and no maintained package wraps them all with errno handling, so they are written here by
hand. Each wrapper raises :class:`OSError` carrying the errno and the object the call was
made on, the way ``os`` functions do.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# Namespace flags for unshare(2), setns(2) and clone(2) (<linux/sched.h>).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Namespace names as /proc/<pid>/ns/ and the OCI runtime spec call them.
NAMESPACE_FLAGS: dict[str, int] = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
}

# mount(2) flags (<linux/mount.h>).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2) flags.
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# prctl(2) options (<linux/prctl.h>).
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

# execveat(2) flag.
AT_EMPTY_PATH = 0x1000

_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "execveat": 322, "seccomp": 317},
    "aarch64": {"pivot_root": 41, "execveat": 281, "seccomp": 277},
}


def _syscall_number(name: str) -> int:
    machine = os.uname().machine
    try:
        return _SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(f"system call {name} is not mapped for architecture {machine}") from None


def _check(result: int, call: str, subject: object = None) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        message = f"{call} failed: {os.strerror(errno)}"
        if subject is None:
            raise OSError(errno, message)
        raise OSError(errno, message, str(subject))
    return result


def _path(value: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces named by ``CLONE_NEW*`` flags."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/<pid>/ns/<kind> file) refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", f"fd {fd}")


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """Call mount(2); ``source`` and ``data`` may be None as the kernel allows."""
    result = _libc.mount(
        _path(source),
        _path(target),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    _check(result, "mount", target)


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    """Call umount2(2) on ``target``."""
    _check(_libc.umount2(_path(target), ctypes.c_int(flags)), "umount", target)


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    """Call pivot_root(2); glibc has no wrapper, so it goes through syscall(2)."""
    number = _syscall_number("pivot_root")
    result = _libc.syscall(ctypes.c_long(number), _path(new_root), _path(put_old))
    _check(result, "pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call prctl(2) with integer arguments and return its result."""
    result = _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(arg4),
        ctypes.c_ulong(arg5),
    )
    return _check(result, "prctl", option)


def set_child_subreaper() -> None:
    """Make orphaned descendants of this process re-parent to it instead of to PID 1."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signal_number: int) -> None:
    """Have the kernel send ``signal_number`` to this process when its parent exits."""
    prctl(PR_SET_PDEATHSIG, signal_number)


def set_dumpable(dumpable: bool) -> None:
    """Set the dumpable flag; a non-dumpable process's /proc/<pid> entries, ``exe``
    among them, cannot be opened by other processes without CAP_SYS_PTRACE."""
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_no_new_privileges() -> None:
    """Stop execve(2) from granting privileges (setuid bits, file capabilities)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def execveat(
    dirfd: int,
    path: str,
    argv: list[str],
    env: list[str],
    flags: int = 0,
) -> None:
    """Call execveat(2); with ``path=""`` and ``AT_EMPTY_PATH`` it executes ``dirfd``
    itself, which is how a sealed memfd is executed. Returns only on failure, by raising."""
    number = _syscall_number("execveat")
    argv_array = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
    env_array = (ctypes.c_char_p * (len(env) + 1))(*[os.fsencode(e) for e in env], None)
    result = _libc.syscall(
        ctypes.c_long(number),
        ctypes.c_int(dirfd),
        os.fsencode(path),
        argv_array,
        env_array,
        ctypes.c_int(flags),
    )
    _check(result, "execveat", argv[0] if argv else path)


# openat2(2) resolve flags (<linux/openat2.h>).
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_SYSCALL_NUMBERS["x86_64"]["openat2"] = 437
_SYSCALL_NUMBERS["aarch64"]["openat2"] = 437


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def openat2(
    dirfd: int, path: str | os.PathLike[str], flags: int, resolve: int, mode: int = 0
) -> int:
    """Call openat2(2) and return the new file descriptor.

    With ``RESOLVE_IN_ROOT`` the kernel resolves ``path`` as if ``dirfd`` were the root
    directory: ``..`` and absolute symlinks stop at ``dirfd``, so a path inside a rootfs
    cannot lead out of it. The descriptor is always opened close-on-exec.
    """
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    number = _syscall_number("openat2")
    result = _libc.syscall(
        ctypes.c_long(number),
        ctypes.c_int(dirfd),
        _path(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return _check(result, "openat2", path)


def sethostname(name: str) -> None:
    """Set the hostname of the calling process's UTS namespace."""
    encoded = name.encode()
    _check(_libc.sethostname(encoded, ctypes.c_size_t(len(encoded))), "sethostname", name)


def setdomainname(name: str) -> None:
    """Set the NIS domain name of the calling process's UTS namespace."""
    encoded = name.encode()
    _check(_libc.setdomainname(encoded, ctypes.c_size_t(len(encoded))), "setdomainname", name)


# prctl(2) options for capabilities (<linux/prctl.h>).
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapUserHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapUserData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets; each is a bit mask of capability numbers."""
    header = _CapUserHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapUserData * 2)()
    for index in range(2):
        shift = 32 * index
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def drop_bounding_capability(capability: int) -> None:
    """Remove ``capability`` from the bounding set, so no later execve can gain it."""
    prctl(PR_CAPBSET_DROP, capability)


def raise_ambient_capability(capability: int) -> None:
    """Add ``capability`` to the ambient set, kept across execve of unprivileged programs."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, capability)


def set_keep_capabilities(keep: bool) -> None:
    """Keep the permitted capabilities when all of the process's uids become non-zero."""
    prctl(PR_SET_KEEPCAPS, 1 if keep else 0)


def syncfs(fd: int) -> None:
    """Write the dirty data of the filesystem that ``fd`` is on to disk (syncfs(2))."""
    _check(_libc.syncfs(ctypes.c_int(fd)), "syncfs", f"fd {fd}")


# sync_file_range(2) flag (<linux/fs.h>): start writeback of the range, without waiting.
SYNC_FILE_RANGE_WRITE = 2


def sync_file_range(fd: int, offset: int, count: int, flags: int) -> None:
    """Start or wait for writeback of ``count`` bytes of a file from ``offset`` (0 means to
    the end of the file), as sync_file_range(2) does. It makes nothing durable by itself:
    file metadata and the disk's cache still need fsync or syncfs."""
    result = _libc.sync_file_range(
        ctypes.c_int(fd), ctypes.c_int64(offset), ctypes.c_int64(count), ctypes.c_uint(flags)
    )
    _check(result, "sync_file_range", f"fd {fd}")


# seccomp(2) operation and flags (<linux/seccomp.h>).
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: bytes, flags: int = 0) -> None:
    """Load a classic BPF seccomp program (struct sock_filter entries, 8 bytes each).

    Needs no_new_privs or CAP_SYS_ADMIN, as seccomp(2) says.
    """
    if not program or len(program) % 8:
        raise ValueError(
            f"a seccomp program is a non-empty multiple of 8 bytes, not {len(program)}"
        )
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    number = _syscall_number("seccomp")
    result = _libc.syscall(
        ctypes.c_long(number),
        ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(flags),
        ctypes.byref(fprog),
    )
    _check(result, "seccomp")


# The new mount API (Linux 5.2): a filesystem context is configured one key at a time, so
# no single call carries all options in one page as mount(2) does (<linux/mount.h>).
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100

# The same numbers on both architectures: these calls are newer than the unified table.
_NEW_MOUNT_API = {"move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432}
_SYSCALL_NUMBERS["x86_64"].update(_NEW_MOUNT_API)
_SYSCALL_NUMBERS["aarch64"].update(_NEW_MOUNT_API)


def fsopen(fstype: str) -> int:
    """Open a filesystem context for ``fstype`` and return its descriptor (close-on-exec)."""
    result = _libc.syscall(
        ctypes.c_long(_syscall_number("fsopen")), fstype.encode(), ctypes.c_uint(FSOPEN_CLOEXEC)
    )
    return _check(result, "fsopen", fstype)


def fsconfig_string(fs_fd: int, key: str, value: str | os.PathLike[str]) -> None:
    """Set the option ``key`` of a filesystem context to the string ``value``."""
    result = _libc.syscall(
        ctypes.c_long(_syscall_number("fsconfig")),
        ctypes.c_int(fs_fd),
        ctypes.c_uint(FSCONFIG_SET_STRING),
        key.encode(),
        _path(value),
        ctypes.c_int(0),
    )
    _check(result, "fsconfig", f"{key}={os.fspath(value)}")


def fsconfig_create(fs_fd: int) -> None:
    """Create the filesystem superblock from a configured context."""
    result = _libc.syscall(
        ctypes.c_long(_syscall_number("fsconfig")),
        ctypes.c_int(fs_fd),
        ctypes.c_uint(FSCONFIG_CMD_CREATE),
        None,
        None,
        ctypes.c_int(0),
    )
    _check(result, "fsconfig", "create")


def fsmount(fs_fd: int, attributes: int = 0) -> int:
    """Return a detached mount (close-on-exec descriptor) of a created context."""
    result = _libc.syscall(
        ctypes.c_long(_syscall_number("fsmount")),
        ctypes.c_int(fs_fd),
        ctypes.c_uint(FSMOUNT_CLOEXEC),
        ctypes.c_uint(attributes),
    )
    return _check(result, "fsmount")


def move_mount_to(mount_fd: int, target: str | os.PathLike[str]) -> None:
    """Attach the detached mount ``mount_fd`` at ``target``."""
    result = _libc.syscall(
        ctypes.c_long(_syscall_number("move_mount")),
        ctypes.c_int(mount_fd),
        b"",
        ctypes.c_int(_AT_FDCWD),
        _path(target),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(result, "move_mount", target)
