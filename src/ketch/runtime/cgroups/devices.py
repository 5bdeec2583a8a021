"""The devices controller: which device nodes the container may open or create.

The rules of linux.resources.devices are written in order to devices.deny and
devices.allow (cgroup v1). Allow rules for the devices every container gets
(:data:`DEFAULT_ALLOWED`) follow them, so that a config that denies everything, as
runc's default does, still leaves /dev/null and the others usable. Without a deny rule the container
could create and open any device node, the host's disks included, whenever it has
CAP_MKNOD.
"""

from __future__ import annotations

from ketch.runtime.cgroups.files import write_value

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.runtime.config import DeviceRule, Resources

CONTROLLER = "devices"

# (type, major, minor, access) of the devices every container gets: null, zero, full,
# random, urandom, tty, console, ptmx, the devpts slaves (major 136), and mknod of any
# node, which alone opens nothing.
DEFAULT_ALLOWED: list[tuple[str, int | None, int | None, str]] = [
    ("c", 1, 3, "rwm"),
    ("c", 1, 5, "rwm"),
    ("c", 1, 7, "rwm"),
    ("c", 1, 8, "rwm"),
    ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"),
    ("c", 5, 1, "rwm"),
    ("c", 5, 2, "rwm"),
    ("c", 136, None, "rwm"),
    ("c", None, None, "m"),
    ("b", None, None, "m"),
]


def wanted(resources: Resources) -> bool:
    return bool(resources.devices)


def rule_text(kind: str, major: int | None, minor: int | None, access: str) -> str:
    if kind == "a":
        return "a"
    major_text = "*" if major is None or major < 0 else str(major)
    minor_text = "*" if minor is None or minor < 0 else str(minor)
    return f"{kind} {major_text}:{minor_text} {access}"


def apply_v1(directory: str, resources: Resources) -> None:
    for rule in resources.devices:
        _write_rule(directory, rule)
    for kind, major, minor, access in DEFAULT_ALLOWED:
        write_value(directory, "devices.allow", rule_text(kind, major, minor, access))


def _write_rule(directory: str, rule: DeviceRule) -> None:
    name = "devices.allow" if rule.allow else "devices.deny"
    write_value(directory, name, rule_text(rule.type, rule.major, rule.minor, rule.access))


# update writes the same files as create: fields left None are skipped either way.
update_v1 = apply_v1
