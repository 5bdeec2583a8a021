"""The default seccomp profile's rules and their compiled form."""

from __future__ import annotations

import errno

import pytest

from ketch.engine.hostconfig import apply_host_options, parse_host_options
from ketch.engine.seccomp_profile import CLONE_NAMESPACE_FLAGS, default_profile
from ketch.engine.spec import DEFAULT_CAPABILITIES
from ketch.errors import SystemFailure


def allowed_names(profile: dict) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for name in rule["names"]
    }


def test_profile_default_action_eperm() -> None:
    profile = default_profile(DEFAULT_CAPABILITIES, "x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == errno.EPERM


@pytest.mark.parametrize("name", ["unshare", "mount", "setns", "keyctl", "add_key", "chroot"])
def test_profile_blocks_without_capability(name: str) -> None:
    profile = default_profile([], "x86_64")
    assert name not in allowed_names(profile)


@pytest.mark.parametrize("name", ["read", "execve", "socketpair", "futex", "ptrace"])
def test_profile_allows_common(name: str) -> None:
    assert name in allowed_names(default_profile([], "x86_64"))


def test_profile_sys_admin_allows_unshare() -> None:
    assert "unshare" in allowed_names(default_profile(["CAP_SYS_ADMIN"], "x86_64"))


def test_profile_default_caps_allow_chroot() -> None:
    assert "chroot" in allowed_names(default_profile(DEFAULT_CAPABILITIES, "x86_64"))


def test_profile_clone_masks_namespaces() -> None:
    profile = default_profile([], "x86_64")
    clone = [rule for rule in profile["syscalls"] if rule["names"] == ["clone"]]
    assert clone[0]["args"] == [
        {"index": 0, "value": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 0}
    ]


def test_profile_clone3_enosys() -> None:
    profile = default_profile([], "x86_64")
    clone3 = [rule for rule in profile["syscalls"] if rule["names"] == ["clone3"]]
    assert clone3[0]["errnoRet"] == errno.ENOSYS


def test_profile_sys_admin_has_no_clone_rule() -> None:
    profile = default_profile(["CAP_SYS_ADMIN"], "x86_64")
    assert all("args" not in rule for rule in profile["syscalls"] if "clone" in rule["names"])


def test_profile_personality_values() -> None:
    profile = default_profile([], "x86_64")
    values = [r["args"][0]["value"] for r in profile["syscalls"] if r["names"] == ["personality"]]
    assert values == [0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF]


def test_profile_x86_64_architectures() -> None:
    profile = default_profile([], "x86_64")
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_profile_aarch64_architectures() -> None:
    profile = default_profile([], "aarch64")
    assert profile["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_profile_aarch64_no_arch_prctl() -> None:
    assert "arch_prctl" not in allowed_names(default_profile([], "aarch64"))


def test_profile_compiles() -> None:
    from ketch.runtime.seccomp import compile_filter, parse_profile

    try:
        compiled = compile_filter(parse_profile(default_profile(DEFAULT_CAPABILITIES)))
    except SystemFailure as error:
        pytest.skip(f"libseccomp unavailable: {error}")
    assert len(compiled.program) > 0


def spec_for(host_config: dict) -> dict:
    spec = {
        "process": {"capabilities": {"effective": ["CAP_CHOWN"]}},
        "linux": {"resources": {"devices": []}},
        "mounts": [],
    }
    apply_host_options(spec, parse_host_options(host_config, "none"), DEFAULT_CAPABILITIES)
    return spec


def test_host_default_sets_profile() -> None:
    assert spec_for({})["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


def test_host_unconfined_sets_none() -> None:
    assert "seccomp" not in spec_for({"SecurityOpt": ["seccomp=unconfined"]})["linux"]


def test_host_privileged_sets_none() -> None:
    assert "seccomp" not in spec_for({"Privileged": True})["linux"]
