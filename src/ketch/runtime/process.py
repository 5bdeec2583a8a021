"""The container's process: limits, user, capabilities, working directory, executable.

Runs in the init after pivot_root, in the order of :func:`prepare_process`. The last
step, :func:`exec_process`, runs after ``start`` and execs the exec helper from its sealed
memfd (see :mod:`ketch.runtime.exechelper`).
"""

from __future__ import annotations

import fcntl
import os
import resource
import stat

from ketch.errors import Forbidden, NotFound, SystemFailure
from ketch.linux import syscalls
from ketch.runtime import capabilities, exechelper, signals
from ketch.runtime.config import Process, Rlimit

# False at run time. seccomp is imported only by create, which compiles a profile when the
# config has one. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.runtime import seccomp

DEFAULT_UMASK = 0o022

# The end of the range closed before exec. closerange uses close_range(2), which takes
# any range at the cost of the open descriptors only, and descriptors above the current
# RLIMIT_NOFILE can be open when the limit was lowered after they were made.
_MAX_FD = 2**31 - 1

# Python ignores SIGPIPE and SIGXFSZ for itself; an ignored signal stays ignored across
# execve, so the container's programs would not die of a closed pipe.
_SIGNALS_PYTHON_IGNORES = (signals.SIGPIPE, signals.SIGXFSZ)


def apply_rlimits(process: Process) -> None:
    for rlimit in process.rlimits:
        kind = getattr(resource, rlimit.type, None)
        if kind is None:
            raise SystemFailure(f"{rlimit.type} is not known to this system")
        soft = _limit(rlimit.soft)
        hard = _limit(rlimit.hard)
        try:
            resource.setrlimit(kind, (soft, hard))
        except (OSError, ValueError) as error:
            raise SystemFailure(_rlimit_error(rlimit.type, kind, rlimit, error)) from None


def _rlimit_error(name: str, kind: int, rlimit: Rlimit, error: Exception) -> str:
    text = f"cannot set {name} to soft {rlimit.soft}, hard {rlimit.hard} (process.rlimits)"
    current_hard = resource.getrlimit(kind)[1]
    if current_hard != resource.RLIM_INFINITY and _limit(rlimit.hard) > current_hard:
        # setrlimit(2) raises a hard limit only with CAP_SYS_RESOURCE.
        return (
            f"{text}: the hard limit here is {current_hard}, and raising it needs "
            "CAP_SYS_RESOURCE, which the runtime lacks"
        )
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"{text}: {reason}"


def apply_oom_score_adj(process: Process) -> None:
    """Write process.oomScoreAdj to /proc/self/oom_score_adj; children inherit it."""
    if process.oom_score_adj is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(process.oom_score_adj))
    except OSError as error:
        # Lowering the value below what the process has needs CAP_SYS_RESOURCE.
        raise SystemFailure(
            f"cannot set process.oomScoreAdj to {process.oom_score_adj}: {error.strerror}"
        ) from None


def _limit(value: int) -> int:
    return resource.RLIM_INFINITY if value >= 2**64 - 1 else value


def set_home(process: Process, passwd: str = "/etc/passwd") -> None:
    """Add HOME to process.env when it lacks one, as runc does: the home directory of the
    user's entry in the container's /etc/passwd, or / without an entry."""
    if any(entry.startswith("HOME=") for entry in process.env):
        return
    process.env.append(f"HOME={_home_of(process.user.uid, passwd)}")


def _home_of(uid: int, passwd: str) -> str:
    try:
        with open(passwd, errors="replace") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
                    return fields[5]
    except OSError:
        pass  # no /etc/passwd in the image
    return "/"


def switch_user(process: Process) -> None:
    """Become the config's user, keeping the capabilities process.capabilities names."""
    caps = process.capabilities
    last = capabilities.last_capability()
    if caps is not None:
        capabilities.limit_bounding_set(caps.get("bounding", []), last)
        syscalls.set_keep_capabilities(True)
    user = process.user
    try:
        os.setgroups(user.additional_gids)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as error:
        raise SystemFailure(
            f"cannot switch to uid {user.uid}, gid {user.gid}: {error.strerror}"
        ) from None
    if caps is not None:
        syscalls.set_keep_capabilities(False)
        capabilities.apply_sets(caps, last)


def enter_working_directory(cwd: str) -> None:
    """chdir to process.cwd and check that the result is inside the container's root.

    CVE-2024-21626: a cwd such as /proc/self/fd/7 reached a directory of the host through
    a descriptor the runtime had left open, and the process started outside the rootfs.
    The kernel reports a cwd outside the root as "(unreachable)...", which glibc's
    getcwd(3) (since 2.27) turns into ENOENT, so an absolute path from getcwd proves the
    cwd is inside the root.
    """
    try:
        os.chdir(cwd)
    except OSError as error:
        raise SystemFailure(f"cannot enter process.cwd {cwd}: {error.strerror}") from None
    try:
        current = os.getcwd()
    except FileNotFoundError:
        current = ""
    if not current.startswith("/"):
        raise SystemFailure(f"process.cwd {cwd} is outside the container's root")


def find_executable(name: str, env: list[str]) -> str:
    """Look ``name`` up as runc does, in the container's PATH; errors use runc's wording."""
    if "/" in name:
        _check_executable(name, name)
        return name
    path_value = ""
    for entry in env:
        if entry.startswith("PATH="):
            path_value = entry[len("PATH=") :]
    for directory in path_value.split(":"):
        candidate = f"{directory or '.'}/{name}"
        try:
            _check_executable(name, candidate)
        except (NotFound, Forbidden):
            continue
        return candidate
    raise NotFound(f'exec: "{name}": executable file not found in $PATH')


def _check_executable(name: str, path: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f'exec: "{name}": stat {path}: no such file or directory') from None
    except OSError as error:
        raise Forbidden(f'exec: "{name}": stat {path}: {error.strerror.lower()}') from None
    if stat.S_ISDIR(info.st_mode):
        raise Forbidden(f'exec: "{name}": is a directory')
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
        raise Forbidden(f'exec: "{name}": permission denied')


def needs_early_seccomp(process: Process, seccomp_filter: seccomp.Filter | None) -> bool:
    """Return True when the filter must be loaded before the user switch.

    Loading a filter needs no_new_privs or CAP_SYS_ADMIN. A process without either at
    the end loads it while the init still has CAP_SYS_ADMIN, as runc does. The rest of
    the setup (user switch, working directory, the wait for start, startContainer
    hooks, the exec) then runs under the filter.
    """
    if seccomp_filter is None or process.no_new_privileges:
        return False
    caps = process.capabilities
    if caps is None:
        return process.user.uid != 0  # root keeps every capability, others lose them
    return "CAP_SYS_ADMIN" not in caps.get("effective", [])


def load_seccomp(seccomp_filter: seccomp.Filter) -> None:
    try:
        syscalls.seccomp_set_filter(seccomp_filter.program, seccomp_filter.flags)
    except OSError as error:
        raise SystemFailure(f"cannot load the seccomp filter: {error.strerror}") from None


def exec_process(
    process: Process,
    executable: str,
    helper_fd: int,
    *,
    preserve_fds: int = 0,
    keep_fd: int = -1,
    seccomp_filter: seccomp.Filter | None = None,
) -> None:
    """Exec the process through the sealed helper; returns only by raising.

    Descriptors 0 to 2 + ``preserve_fds`` reach the container's program; ``keep_fd``
    (close-on-exec, so the kernel closes it during execveat) stays open until then.
    ``seccomp_filter`` is loaded last, so that it applies to the exec and the program only.
    """
    for number in _SIGNALS_PYTHON_IGNORES:
        signals.set_handler(number, signals.SIG_DFL)
    signals.unblock_all()
    os.umask(DEFAULT_UMASK if process.user.umask is None else process.user.umask)
    # Every other descriptor of the init is closed here, because the caller's sockets and
    # files came along with the fork. The helper's descriptor is close-on-exec, so the
    # kernel closes it during execveat. F_DUPFD_CLOEXEC takes the lowest free number
    # above the preserved ones, so it never replaces a descriptor that must survive.
    first_free = 3 + preserve_fds
    helper = helper_fd
    if helper < first_free:
        helper = fcntl.fcntl(helper_fd, fcntl.F_DUPFD_CLOEXEC, first_free)
    close_fds_from(first_free, {helper, keep_fd})
    for fd in range(3, first_free):
        # A caller's descriptor may be close-on-exec; passing it on is the point here.
        os.set_inheritable(fd, True)
    if process.no_new_privileges:
        syscalls.set_no_new_privileges()
    if seccomp_filter is not None:
        load_seccomp(seccomp_filter)
    argv = [exechelper.MARKER, executable, *process.args]
    syscalls.execveat(helper, "", argv, process.env, syscalls.AT_EMPTY_PATH)


def close_fds_from(low: int, keep: set[int]) -> None:
    """Close every descriptor from ``low`` up except those in ``keep``."""
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, _MAX_FD)
