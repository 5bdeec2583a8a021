"""The default OCI runtime config, as ``runc spec`` writes it (runc 1.1).

Callers build on it: the engine fills in the process, the rootfs path and the resources,
and ``ketch-runc spec`` writes it as config.json. It is a plain dict so that it serializes
as is; :mod:`ketch.runtime.config` validates what comes back.
"""

from __future__ import annotations

import copy
from typing import Any

OCI_VERSION = "1.0.2-dev"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_DEFAULT_SPEC: dict[str, Any] = {
    "ociVersion": OCI_VERSION,
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {
            "bounding": _CAPABILITIES,
            "effective": _CAPABILITIES,
            "permitted": _CAPABILITIES,
            "ambient": _CAPABILITIES,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    },
}


def default_spec(args: list[str] | None = None) -> dict[str, Any]:
    """Return a new copy of the default config; ``args`` replaces ``process.args``.

    Like runc's, it asks for a terminal (``process.terminal`` is true), which a caller
    without a console must set to false.
    """
    spec = copy.deepcopy(_DEFAULT_SPEC)
    if args is not None:
        spec["process"]["args"] = list(args)
    return spec
