"""The process object for ``ketch-runc exec`` given as arguments instead of ``--process``.

As runc does, the container's own ``process`` from its bundle's config.json is the
template: the command line replaces the args and the terminal flag, and the options
replace or extend the rest (``--cwd``, ``--env``, ``--user``, ``--additional-gids``,
``--cap``, ``--no-new-privs``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ketch.errors import InvalidArgument, NotFound

# The sets a capability given with --cap is added to. Not ambient: with no inheritable
# entry for it, the kernel would reject the ambient raise.
CAP_SETS = ("bounding", "effective", "permitted")


def load_process_file(path: str) -> dict[str, Any]:
    """Read the process object of ``--process FILE`` (``-`` is stdin)."""
    try:
        if path == "-":
            import sys

            text = sys.stdin.read()
        else:
            text = Path(path).read_text()
    except FileNotFoundError:
        raise NotFound(f"process file {path} does not exist (--process)") from None
    except OSError as error:
        raise InvalidArgument(f"cannot read process file {path}: {error.strerror}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid process file {path}: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"invalid process file {path}: expected a JSON object")
    return document


def container_process(bundle: str) -> dict[str, Any]:
    """Return the ``process`` object of the container's config.json."""
    path = Path(bundle) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise NotFound(f"cannot read the container's config {path}: {error}") from None
    process = config.get("process") if isinstance(config, dict) else None
    if not isinstance(process, dict):
        raise InvalidArgument(f"invalid config.json {path}: process: expected an object")
    return process


def process_from_options(
    template: dict[str, Any],
    args: list[str],
    *,
    terminal: bool,
    cwd: str | None = None,
    env: list[str] | None = None,
    user: str | None = None,
    additional_gids: list[int] | None = None,
    caps: list[str] | None = None,
    no_new_privileges: bool = False,
) -> dict[str, Any]:
    """Return ``template`` changed as the exec options say; ``template`` is not changed."""
    if not args:
        raise InvalidArgument("exec needs a command to run (after the container id) or --process")
    process = copy.deepcopy(template)
    process["args"] = list(args)
    process["terminal"] = terminal
    if not terminal:
        process.pop("consoleSize", None)
    if cwd is not None:
        process["cwd"] = cwd
    if env:
        process["env"] = _merge_env(process.get("env", []), env)
    if user is not None:
        process["user"] = {**process.get("user", {}), **parse_user(user)}
    if additional_gids:
        process.setdefault("user", {})["additionalGids"] = list(additional_gids)
    if caps:
        _add_capabilities(process, caps)
    if no_new_privileges:
        process["noNewPrivileges"] = True
    return process


def parse_user(text: str) -> dict[str, int]:
    """Parse ``UID[:GID]`` (numbers, as runc takes them) into process.user fields."""
    uid_text, _, gid_text = text.partition(":")
    try:
        user = {"uid": int(uid_text)}
        if gid_text:
            user["gid"] = int(gid_text)
    except ValueError:
        raise InvalidArgument(
            f"invalid --user {text!r}: expected UID or UID:GID as numbers"
        ) from None
    return user


def _merge_env(current: list[str], changes: list[str]) -> list[str]:
    merged = {entry.partition("=")[0]: entry for entry in current}
    for entry in changes:
        if "=" not in entry:
            raise InvalidArgument(f"invalid --env {entry!r}: expected KEY=VALUE")
        merged[entry.partition("=")[0]] = entry
    return list(merged.values())


def _add_capabilities(process: dict[str, Any], caps: list[str]) -> None:
    sets = process.setdefault("capabilities", {})
    for name in caps:
        full = name.upper() if name.upper().startswith("CAP_") else f"CAP_{name.upper()}"
        for set_name in CAP_SETS:
            entries = sets.setdefault(set_name, [])
            if full not in entries:
                entries.append(full)
