"""``ketch-runc features``: what this runtime implements, in runc's JSON shape.

The shape is the features document of the OCI runtime spec (features.md and
features-linux.md in opencontainers/runtime-spec), which ``runc features`` prints. It
lists the OCI versions accepted, the hook names and the mount options. Under ``linux`` it
lists the namespaces, capabilities, cgroup versions, seccomp support and security modules.
The values come from the tables the runtime itself uses, so the document follows the code.
"""

from __future__ import annotations

from typing import Any

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.1.0"


def features() -> dict[str, Any]:
    from ketch.runtime import capabilities, config, hooks, mounts, seccomp

    namespaces = [
        kind for kind in config.NAMESPACE_TYPES if kind not in config.UNSUPPORTED_NAMESPACES
    ]
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(hooks.HOOK_NAMES),
        "mountOptions": sorted(mounts.option_names()),
        "linux": {
            "namespaces": namespaces,
            "capabilities": sorted(capabilities.CAPABILITIES, key=capabilities.CAPABILITIES.get),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": seccomp.features(),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false"},
    }
