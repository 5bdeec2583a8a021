"""The config's ``linux.seccomp`` profile, compiled to a BPF program with libseccomp.

libseccomp is called through ctypes on ``libseccomp.so.2``, which Debian ships in the
libseccomp2 package that runc and systemd already depend on. The Python binding
(``import seccomp``, Debian's python3-seccomp) is built only for Debian's system Python.
A venv or another interpreter cannot import it, but any of them can load the C library.

The parent compiles the profile before it forks the init (:func:`compile_filter`), so
that a bad profile fails ``create`` before anything is made, and the init needs neither
libseccomp nor the host's files after pivot_root. The init loads the program with
seccomp(2) as late as it can (see :func:`ketch.runtime.process.exec_process`), so that
the filter does not apply to the runtime's own steps.

Profile semantics follow runc's: syscall names this libseccomp does not know are
skipped, a rule whose action equals the default action is skipped (libseccomp rejects
it), ``errnoRet`` defaults to EPERM, and conditions on the same argument index become
separate rules (any one matches), because libseccomp cannot AND two conditions on one
argument.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ketch.errors import InvalidArgument, SystemFailure
from ketch.runtime.record import Factory, Record

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LIBRARY = "libseccomp.so.2"

# SCMP_ACT_* values from libseccomp's seccomp.h; ERRNO and TRACE carry a 16-bit value.
_ACTION_BASES = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_ACTIONS_WITH_VALUE = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare.
_OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# seccomp(2) flags by their OCI names.
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

_ARCHITECTURE_PREFIX = "SCMP_ARCH_"
_SCMP_ERROR = -1  # __NR_SCMP_ERROR: libseccomp has no syscall of that name


class Argument(Record):
    index: int
    value: int
    value_two: int
    op: str


class Rule(Record):
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[Argument] = Factory(list)


class Profile(Record):
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = Factory(list)
    flags: list[str] = Factory(list)
    rules: list[Rule] = Factory(list)


class Filter(Record):
    """A compiled profile: the BPF program and the seccomp(2) flags to load it with."""

    program: bytes
    flags: int


class _ArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp.
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def parse_profile(value: object) -> Profile:
    """Validate a decoded linux.seccomp object; errors name the field."""
    where = "linux.seccomp"
    profile = _object(value, where)
    if profile.get("listenerPath"):
        # Limitation: no seccomp user notification, so SCMP_ACT_NOTIFY profiles fail.
        raise _invalid(f"{where}.listenerPath", "no listener: SCMP_ACT_NOTIFY is not supported")
    result = Profile(
        default_action=_action(profile.get("defaultAction"), f"{where}.defaultAction"),
        default_errno_ret=_optional_errno(
            profile.get("defaultErrnoRet"), f"{where}.defaultErrnoRet"
        ),
        architectures=_names(profile.get("architectures", []), f"{where}.architectures"),
        flags=_names(profile.get("flags", []), f"{where}.flags"),
    )
    for name in result.architectures:
        if not name.startswith(_ARCHITECTURE_PREFIX):
            raise _invalid(f"{where}.architectures", f"SCMP_ARCH_ names, not {name!r}")
    for name in result.flags:
        if name not in _FLAGS:
            raise _invalid(f"{where}.flags", f"names among {', '.join(_FLAGS)}, not {name!r}")
    for index, item in enumerate(_list(profile.get("syscalls", []), f"{where}.syscalls")):
        result.rules.append(_rule(item, f"{where}.syscalls[{index}]"))
    return result


def _rule(value: object, where: str) -> Rule:
    entry = _object(value, where)
    names = _names(entry.get("names"), f"{where}.names")
    if not names:
        raise _invalid(f"{where}.names", "a non-empty list of syscall names")
    arguments = []
    for index, item in enumerate(_list(entry.get("args", []), f"{where}.args")):
        arguments.append(_argument(item, f"{where}.args[{index}]"))
    return Rule(
        names=names,
        action=_action(entry.get("action"), f"{where}.action"),
        errno_ret=_optional_errno(entry.get("errnoRet"), f"{where}.errnoRet"),
        args=arguments,
    )


def _argument(value: object, where: str) -> Argument:
    entry = _object(value, where)
    op = entry.get("op")
    if op not in _OPERATORS:
        raise _invalid(f"{where}.op", f"one of {', '.join(_OPERATORS)}, not {op!r}")
    return Argument(
        index=_integer(entry.get("index"), f"{where}.index", 0, 5),
        value=_integer(entry.get("value", 0), f"{where}.value", 0, 2**64 - 1),
        value_two=_integer(entry.get("valueTwo", 0), f"{where}.valueTwo", 0, 2**64 - 1),
        op=op,
    )


def _action(value: object, where: str) -> str:
    if value == "SCMP_ACT_NOTIFY":
        # Limitation: no seccomp user notification (it needs a listener process).
        raise _invalid(where, "an action other than SCMP_ACT_NOTIFY, which is not supported")
    if value not in _ACTION_BASES:
        raise _invalid(where, f"one of {', '.join(_ACTION_BASES)}, not {value!r}")
    return str(value)


def compile_filter(profile: Profile) -> Filter:
    """Build the profile with libseccomp and return its BPF program."""
    library = _library()
    default = _action_value(profile.default_action, profile.default_errno_ret)
    context = library.seccomp_init(default)
    if not context:
        raise SystemFailure(f"seccomp_init failed for defaultAction {profile.default_action}")
    try:
        _add_architectures(library, context, profile.architectures)
        for rule in profile.rules:
            _add_rule(library, context, rule, default)
        return Filter(_export(library, context), _flag_bits(profile.flags))
    finally:
        library.seccomp_release(context)


def features() -> dict[str, Any]:
    """Return the ``linux.seccomp`` part of the features document."""
    try:
        _library()
    except SystemFailure:
        return {"enabled": False}
    return {
        "enabled": True,
        "actions": [*_ACTION_BASES],
        "operators": [*_OPERATORS],
        "archs": sorted(_KNOWN_ARCHITECTURES),
        "knownFlags": [*_FLAGS],
        "supportedFlags": [*_FLAGS],
    }


_KNOWN_ARCHITECTURES = (
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_RISCV64",
)

_loaded: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _loaded
    if _loaded is None:
        try:
            library = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as error:
            raise SystemFailure(
                f"cannot load {LIBRARY} for linux.seccomp ({error}); install libseccomp2"
            ) from None
        library.seccomp_init.restype = ctypes.c_void_p
        library.seccomp_init.argtypes = [ctypes.c_uint32]
        library.seccomp_release.argtypes = [ctypes.c_void_p]
        library.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        library.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        library.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        library.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        ]
        library.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _loaded = library
    return _loaded


def _action_value(action: str, errno_ret: int | None) -> int:
    base = _ACTION_BASES[action]
    if action in _ACTIONS_WITH_VALUE:
        return base | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


def _add_architectures(library: ctypes.CDLL, context: int, names: list[str]) -> None:
    for name in names:
        token = library.seccomp_arch_resolve_name(
            name[len(_ARCHITECTURE_PREFIX) :].lower().encode()
        )
        if token == 0:
            raise InvalidArgument(
                f"invalid config.json: linux.seccomp.architectures: {name} is not known to "
                "this libseccomp"
            )
        result = library.seccomp_arch_add(context, token)
        if result < 0 and -result != errno.EEXIST:
            raise SystemFailure(f"cannot add seccomp architecture {name}: {os.strerror(-result)}")


def _add_rule(library: ctypes.CDLL, context: int, rule: Rule, default: int) -> None:
    action = _action_value(rule.action, rule.errno_ret)
    if action == default:
        return
    for name in rule.names:
        number = library.seccomp_syscall_resolve_name(name.encode())
        if number == _SCMP_ERROR:
            continue  # a syscall of another kernel or architecture, as runc skips it
        for conditions in _condition_groups(rule.args):
            array = (_ArgCmp * max(len(conditions), 1))(
                *[
                    _ArgCmp(arg.index, _OPERATORS[arg.op], arg.value, arg.value_two)
                    for arg in conditions
                ]
            )
            result = library.seccomp_rule_add_array(context, action, number, len(conditions), array)
            if result < 0:
                raise InvalidArgument(
                    f"invalid config.json: linux.seccomp: cannot add the rule for {name}: "
                    f"{os.strerror(-result)}"
                )


def _condition_groups(arguments: list[Argument]) -> list[list[Argument]]:
    """Return one group of ANDed conditions, or one per condition when an index repeats."""
    indexes = [argument.index for argument in arguments]
    if len(set(indexes)) == len(indexes):
        return [arguments]
    return [[argument] for argument in arguments]


def _export(library: ctypes.CDLL, context: int) -> bytes:
    fd = os.memfd_create("ketch-seccomp", os.MFD_CLOEXEC)
    try:
        result = library.seccomp_export_bpf(context, fd)
        if result < 0:
            raise SystemFailure(f"seccomp_export_bpf failed: {os.strerror(-result)}")
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _flag_bits(names: list[str]) -> int:
    bits = 0
    for name in names:
        bits |= _FLAGS[name]
    return bits


def _invalid(where: str, expected: str) -> InvalidArgument:
    return InvalidArgument(f"invalid config.json: {where}: expected {expected}")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, "an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(where, "a list")
    return value


def _names(value: object, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(item, str) for item in items):
        raise _invalid(where, "a list of strings")
    return items


def _integer(value: object, where: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _invalid(where, f"an integer from {minimum} to {maximum}, not {value!r}")
    return value


def _optional_errno(value: object, where: str) -> int | None:
    return None if value is None else _integer(value, where, 0, 0xFFFF)
