"""The default seccomp profile: docker's behaviour, written as ketch's own data.

A container that is neither privileged nor started with ``seccomp=unconfined`` gets this
profile as its ``linux.seccomp``. It follows moby's ``profiles/seccomp/default_linux.go``
(a version that still allows io_uring): every syscall not listed fails
with EPERM, a list of syscalls is always allowed, and some syscalls are allowed only when
the container holds the capability that the kernel checks for them anyway. Without
CAP_SYS_ADMIN, clone may not create namespaces and clone3 fails with ENOSYS so that libc
falls back to clone, whose flags the filter can inspect (clone3 passes them in memory).

Only the host's architecture family is filtered: x86_64 with its x86 and x32 ABIs, or
aarch64 with 32-bit arm.
"""

from __future__ import annotations

import errno
import platform
from collections.abc import Iterable
from typing import Any

# Syscalls every container may make, grouped by what they are for. Names a kernel or
# libseccomp does not know (32-bit variants on a 64-bit ABI, newer calls) are skipped by
# the runtime, as runc does.
_FILES = [
    "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64",
    "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek",
    "_llseek", "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "fsync", "fdatasync",
    "sync", "syncfs", "sync_file_range", "fallocate", "fadvise64", "fadvise64_64",
    "readahead", "truncate", "truncate64", "ftruncate", "ftruncate64", "sendfile",
    "sendfile64", "splice", "tee", "vmsplice", "copy_file_range", "ioctl",
    "name_to_handle_at",
]  # fmt: skip
_FILE_METADATA = [
    "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat64", "newfstatat",
    "statx", "statfs", "statfs64", "fstatfs", "fstatfs64", "access", "faccessat",
    "faccessat2", "chmod", "fchmod", "fchmodat", "chown", "chown32", "fchown", "fchown32",
    "fchownat", "lchown", "lchown32", "utime", "utimes", "utimensat", "utimensat_time64",
    "futimesat", "umask",
    "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
    "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
]  # fmt: skip
_DIRECTORIES = [
    "getcwd", "chdir", "fchdir", "getdents", "getdents64", "mkdir", "mkdirat", "rmdir",
    "mknod", "mknodat", "link", "linkat", "symlink", "symlinkat", "readlink", "readlinkat",
    "unlink", "unlinkat", "rename", "renameat", "renameat2",
]  # fmt: skip
_MEMORY = [
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    "mlock", "mlock2", "mlockall", "munlock", "munlockall", "remap_file_pages", "membarrier",
    "memfd_create", "memfd_secret", "pkey_alloc", "pkey_free", "pkey_mprotect",
]  # fmt: skip
_PROCESSES = [
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "waitpid", "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid",
    "setsid", "set_tid_address", "get_robust_list", "set_robust_list", "rseq",
    "get_thread_area", "set_thread_area", "prctl", "capget", "capset", "getrlimit",
    "setrlimit", "ugetrlimit", "prlimit64", "getrusage", "times", "getpriority",
    "setpriority", "ioprio_get", "ioprio_set", "pidfd_open", "pidfd_send_signal",
    "process_mrelease", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self", "restart_syscall",
]  # fmt: skip
_IDENTITY = [
    "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid",
    "getegid32", "getresuid", "getresuid32", "getresgid", "getresgid32", "getgroups",
    "getgroups32", "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32",
    "setregid", "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32",
    "setfsuid", "setfsuid32", "setfsgid", "setfsgid32", "setgroups", "setgroups32",
]  # fmt: skip
_SIGNALS = [
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigpending",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "sigaltstack", "sigprocmask", "sigreturn",
    "signalfd", "signalfd4", "pause", "alarm",
]  # fmt: skip
_SCHEDULING = [
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr",
    "sched_setattr", "sched_getparam", "sched_setparam", "sched_getscheduler",
    "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "getcpu",
]  # fmt: skip
_TIME = [
    "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres",
    "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64", "nanosleep",
    # These may read the clock state. Setting it fails in the kernel without CAP_SYS_TIME.
    "adjtimex", "clock_adjtime", "clock_adjtime64",
    "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
]  # fmt: skip
_WAITING = [
    "futex", "futex_time64", "futex_waitv", "select", "_newselect", "pselect6",
    "pselect6_time64", "poll", "ppoll", "ppoll_time64", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_wait", "epoll_wait_old", "epoll_pwait",
    "epoll_pwait2", "eventfd", "eventfd2", "inotify_init", "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
]  # fmt: skip
_ASYNC_IO = [
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "io_uring_setup", "io_uring_enter", "io_uring_register",
]  # fmt: skip
_IPC = [
    "pipe", "pipe2", "ipc", "msgget", "msgctl", "msgsnd", "msgrcv", "semget", "semctl",
    "semop", "semtimedop", "semtimedop_time64", "shmget", "shmctl", "shmat", "shmdt",
    "mq_open", "mq_unlink", "mq_getsetattr", "mq_notify", "mq_timedsend",
    "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64",
]  # fmt: skip
# socket itself is allowed by a rule on its family below.
_NETWORK = [
    "socketcall", "socketpair", "bind", "listen", "accept", "accept4", "connect",
    "getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown", "send", "sendto",
    "sendmsg", "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64",
]  # fmt: skip
_SYSTEM_INFO = ["uname", "sysinfo", "getrandom"]

ALWAYS_ALLOWED = (
    _FILES + _FILE_METADATA + _DIRECTORIES + _MEMORY + _PROCESSES + _IDENTITY + _SIGNALS
    + _SCHEDULING + _TIME + _WAITING + _ASYNC_IO + _IPC + _NETWORK + _SYSTEM_INFO
)  # fmt: skip

# Syscalls allowed only to a container that holds the capability. The kernel checks the
# same capability, so the filter mainly narrows what an unprivileged container can reach.
ALLOWED_WITH_CAPABILITY: dict[str, list[str]] = {
    "CAP_SYS_ADMIN": [
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
        "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname",
        "setns", "syslog", "umount", "umount2", "unshare",
    ],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": [
        "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
        "ptrace",
    ],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
}  # fmt: skip

# ptrace and process_vm_* are allowed to every container, as docker does on kernels from
# 4.8 on, because since 4.8 seccomp is rechecked after a tracer changes a syscall.
# NOTE: docker allows them only with CAP_SYS_PTRACE on older kernels; ketch does not check.
TRACING = ["ptrace", "process_vm_readv", "process_vm_writev"]

# The namespace flags of clone(2) that need CAP_SYS_ADMIN: NEWNS, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET and NEWCGROUP.
CLONE_NAMESPACE_FLAGS = (
    0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x02000000
)

AF_VSOCK = 40

# personality(2) values a container may set: PER_LINUX, PER_LINUX32, UNAME26 on each,
# and 0xffffffff, which only reads the current persona.
PERSONALITIES = [0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF]

# The seccomp architectures of each host machine: the native ABI first, then the
# compatibility ABIs a binary may still call through.
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}
# Syscalls that exist only on one architecture family and are allowed there.
ARCHITECTURE_SYSCALLS = {
    "x86_64": ["arch_prctl", "modify_ldt"],
    "aarch64": [
        "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
        "cacheflush", "set_tls",
    ],
}  # fmt: skip


def default_profile(capabilities: Iterable[str], machine: str | None = None) -> dict[str, Any]:
    """Build the OCI ``linux.seccomp`` object for a container holding ``capabilities``
    (``CAP_`` names, the bounding set) on ``machine`` (``platform.machine()`` by default)."""
    held = set(capabilities)
    machine = machine or platform.machine()
    allowed = list(ALWAYS_ALLOWED) + TRACING + ARCHITECTURE_SYSCALLS.get(machine, [])
    for capability, names in ALLOWED_WITH_CAPABILITY.items():
        if capability in held:
            allowed += names
    syscalls: list[dict[str, Any]] = [
        {"names": _unique(allowed), "action": "SCMP_ACT_ALLOW"},
        _allow_if("socket", 0, AF_VSOCK, "SCMP_CMP_NE"),
    ]
    syscalls += [_allow_if("personality", 0, value, "SCMP_CMP_EQ") for value in PERSONALITIES]
    if "CAP_SYS_ADMIN" not in held:
        syscalls += _namespace_free_clone()
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        # NOTE: other hosts (ppc64le, s390x, riscv64) get no architecture list, which
        # libseccomp takes as the native ABI only.
        "architectures": list(ARCHITECTURES.get(machine, [])),
        "syscalls": syscalls,
    }


def _namespace_free_clone() -> list[dict[str, Any]]:
    clone = _allow_if("clone", 0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")
    clone["args"][0]["valueTwo"] = 0
    return [clone, {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]


def _allow_if(name: str, index: int, value: int, op: str) -> dict[str, Any]:
    return {
        "names": [name],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": index, "value": value, "op": op}],
    }


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
