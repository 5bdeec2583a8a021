"""The runtime's record of each container, under the state root (like ``runc --root``).

Layout::

    <state root>/                 mode 0700
        <container id>/           mode 0711
            state.json            the record below, replaced atomically
            exec.fifo             mode 0622; exists from create until start

``state.json`` contains what later ``ketch-runc`` processes need: the init's pid and its
start time (field 22 of /proc/<pid>/stat, so that a reused pid is not taken for the
init), the bundle, the rootfs, the creation time, the annotations and the cgroup
manager's record. The status is not stored but derived, as runc does: stopped when the
init is gone or a zombie; otherwise paused while the cgroup is frozen, created while
exec.fifo exists, and running after.
"""

from __future__ import annotations

import posix

from ketch.errors import InvalidArgument, NotFound, SystemFailure
from ketch.runtime import json_text
from ketch.runtime.paths import exists, join

# False at run time, so that this module does not import typing, pathlib, json or re:
# every ketch-runc call pays for what it imports. For the same reason it calls posix, not
# os (see ketch.runtime.paths). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"

# The characters a container id may contain besides those for which str.isalnum() is true.
# Together they are what the regular expression [\w+\-.] matches.
_ID_PUNCTUATION = "_+-."


class ContainerRecord:
    """The contents of state.json.

    A plain class rather than a dataclass, because importing dataclasses (with inspect)
    costs each ``ketch-runc`` call a few milliseconds.
    """

    def __init__(
        self,
        id: str,
        pid: int,
        init_start_time: int,
        bundle: str,
        rootfs: str,
        created: str,
        oci_version: str,
        owner: str = "",
        annotations: dict[str, str] | None = None,
        cgroups: dict[str, Any] | None = None,
        hooks: dict[str, Any] | None = None,
        seccomp: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.pid = pid
        self.init_start_time = init_start_time
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.oci_version = oci_version
        self.owner = owner
        self.annotations = {} if annotations is None else annotations
        self.cgroups = {} if cgroups is None else cgroups
        # The config's hooks object and linux.seccomp object, for start, delete and exec.
        self.hooks = {} if hooks is None else hooks
        self.seccomp = seccomp

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as state.json stores them."""
        return dict(vars(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContainerRecord) and vars(self) == vars(other)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"ContainerRecord({fields})"

    def to_oci_state(self, status: str) -> dict[str, Any]:
        """Return the state as ``runc state`` prints it."""
        return {
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": 0 if status == "stopped" else self.pid,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
        }


def validate_id(container_id: str) -> None:
    if (
        not isinstance(container_id, str)
        or not container_id
        or not all(char.isalnum() or char in _ID_PUNCTUATION for char in container_id)
        or container_id in (".", "..")
        or len(container_id) > 1024
    ):
        raise InvalidArgument(
            f"invalid container id {container_id!r}: expected letters, digits and _ + - ."
        )


def container_dir(state_root: Path | str, container_id: str) -> Path:
    from pathlib import Path

    return Path(container_path(state_root, container_id))


def container_path(state_root: Path | str, container_id: str) -> str:
    """Return the container's state directory as a string, for the verbs without pathlib."""
    validate_id(container_id)
    return join(state_root, container_id)


def write_record(directory: Path | str, record: ContainerRecord) -> None:
    # Replaced by rename, so a reader sees the old or the new record. Not fsynced: the
    # state root is runtime state (on tmpfs under /run by default) that does not outlive
    # the containers, which a reboot ends anyway.
    temporary = join(directory, STATE_FILE + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(json_text.dumps(record.to_dict()))
    posix.replace(temporary, join(directory, STATE_FILE))


def read_record(state_root: Path | str, container_id: str) -> ContainerRecord:
    directory = container_path(state_root, container_id)
    try:
        with open(join(directory, STATE_FILE)) as handle:
            text = handle.read()
    except FileNotFoundError:
        raise NotFound(f"container {container_id} does not exist") from None
    try:
        return ContainerRecord(**json_text.loads(text))
    except (ValueError, TypeError) as error:
        raise SystemFailure(
            f"invalid state record {join(directory, STATE_FILE)}: {error}"
        ) from None


def process_start_time(pid: int) -> int | None:
    """Return field 22 of /proc/<pid>/stat, or None when the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses; it ends at the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def init_is_alive(record: ContainerRecord) -> bool:
    return record.pid > 0 and process_start_time(record.pid) == record.init_start_time


def status_of(directory: Path | str, record: ContainerRecord) -> str:
    if not init_is_alive(record):
        return "stopped"
    if is_frozen(record.cgroups):
        return "paused"
    if exists(join(directory, EXEC_FIFO)):
        return "created"
    return "running"


def is_frozen(cgroups: dict[str, Any]) -> bool:
    """Return True when the cgroup record's freezer (v1) or cgroup.freeze (v2) is set.

    Reads the files directly, so that ``state`` does not import the cgroup managers.
    """
    from ketch.runtime.cgroups import freezer

    if cgroups.get("version") == 2:
        return freezer.frozen_v2(cgroups["directory"])
    for name, directory in cgroups.get("directories", {}).items():
        if "freezer" in cgroups.get("controllers", {}).get(name, [name]):
            return freezer.frozen_v1(directory)
    return False
