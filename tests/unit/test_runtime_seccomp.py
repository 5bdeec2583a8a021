"""Parsing linux.seccomp and compiling it with libseccomp (no filter is loaded here)."""

from __future__ import annotations

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime import seccomp

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


def _compile(profile: dict) -> seccomp.Filter:
    return seccomp.compile_filter(seccomp.parse_profile(profile))


def test_compile_gives_bpf_program():
    program = _compile(DENY_MKDIR).program
    assert program
    assert len(program) % 8 == 0


def test_compile_flags_bits():
    profile = {**DENY_MKDIR, "flags": ["SECCOMP_FILTER_FLAG_LOG"]}
    assert _compile(profile).flags == 2


def test_unknown_syscall_skipped():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}],
    }
    assert _compile(profile).program


def test_rule_like_default_skipped():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
    }
    assert _compile(profile).program


def test_repeated_argument_index_compiles():
    condition = {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}
    rule = {
        "names": ["personality"],
        "action": "SCMP_ACT_ERRNO",
        "args": [condition, {**condition, "value": 2}],
    }
    assert _compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}).program


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"defaultAction": "SCMP_ACT_FLY"}, "linux.seccomp.defaultAction"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["BOGUS"]}, "linux.seccomp.flags"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86"]}, "architectures"),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "x"}]},
            "linux.seccomp.syscalls[0].names",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9}]}
                ],
            },
            "linux.seccomp.syscalls[0].args[0]",
        ),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, "listenerPath"),
    ],
)
def test_invalid_profile_names_field(profile, field):
    with pytest.raises(InvalidArgument) as raised:
        seccomp.parse_profile(profile)
    assert field in str(raised.value)


def test_unknown_architecture_rejected():
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}
    with pytest.raises(InvalidArgument, match="SCMP_ARCH_VAX"):
        _compile(profile)


def test_features_enabled():
    features = seccomp.features()
    assert features["enabled"] is True
    assert "SCMP_ACT_ERRNO" in features["actions"]
