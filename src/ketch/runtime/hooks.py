"""OCI lifecycle hooks: programs the config's ``hooks`` object runs around the container.

Each hook is ``{"path", "args", "env", "timeout"}``. ``path`` is the executable and
``args`` its whole argv (``args[0]`` included), ``env`` its whole environment, and
``timeout`` the seconds after which it is killed. It gets the container's state as JSON
on stdin: ``ociVersion``, ``id``, ``status``, ``pid``, ``bundle`` and ``annotations``.

Where and when each kind runs here:

===================  ===============================================  ===========  =========
kind                 when                                             where        status
===================  ===============================================  ===========  =========
``prestart``         create, after the namespaces and mounts, before  runtime      creating
                     pivot_root (deprecated by the spec)
``createRuntime``    right after the prestart hooks                   runtime      creating
``createContainer``  in the init, after createRuntime, before         container's  creating
                     pivot_root, so ``path`` is a host path           mount ns
``startContainer``   in the init, after ``start``, just before the    container    created
                     container's program; ``path`` is in the rootfs
``poststart``        ``start``, once the program runs                 runtime      running
``poststop``         ``delete``, once the container is gone           runtime      stopped
===================  ===============================================  ===========  =========

A failing hook (non-zero exit status, a signal, or its timeout) fails its step for the
first four kinds; ``create`` then removes everything it made. A failing poststart or
poststop hook is logged as a warning and the remaining hooks still run, as the spec says.
"""

from __future__ import annotations

from ketch.errors import InvalidArgument, SystemFailure
from ketch.runtime import json_text
from ketch.runtime.lazylog import LazyLogger
from ketch.runtime.record import Factory, Record

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = LazyLogger(__name__)

HOOK_NAMES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)

# The kinds whose failure is only a warning.
_WARNING_ONLY = ("poststart", "poststop")

# Bytes of a failing hook's output kept for the error message.
_OUTPUT_KEPT = 400


class Hook(Record):
    path: str
    args: list[str] = Factory(list)
    env: list[str] = Factory(list)
    timeout: int | None = None  # seconds


def parse_hooks(value: object) -> dict[str, list[Hook]]:
    """Validate a decoded ``hooks`` object; errors name the field."""
    if not isinstance(value, dict):
        raise _invalid("hooks", "an object")
    result: dict[str, list[Hook]] = {}
    for kind, entries in value.items():
        if kind not in HOOK_NAMES:
            raise _invalid("hooks", f"keys among {', '.join(HOOK_NAMES)}, not {kind!r}")
        if not isinstance(entries, list):
            raise _invalid(f"hooks.{kind}", "a list")
        hooks = [_hook(entry, f"hooks.{kind}[{index}]") for index, entry in enumerate(entries)]
        if hooks:
            result[kind] = hooks
    return result


def _hook(value: object, where: str) -> Hook:
    if not isinstance(value, dict):
        raise _invalid(where, "an object")
    path = value.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _invalid(f"{where}.path", f"an absolute path, not {path!r}")
    hook = Hook(path=path)
    for name in ("args", "env"):
        items = value.get(name, [])
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise _invalid(f"{where}.{name}", "a list of strings")
        setattr(hook, name, items)
    timeout = value.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise _invalid(f"{where}.timeout", f"a positive number of seconds, not {timeout!r}")
        hook.timeout = timeout
    return hook


def hook_state(
    oci_version: str,
    container_id: str,
    status: str,
    pid: int,
    bundle: str,
    annotations: dict[str, str],
) -> dict[str, Any]:
    """Return the state object hooks read on stdin."""
    return {
        "ociVersion": oci_version,
        "id": container_id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    }


def run_hooks(kind: str, hooks: list[Hook], state: dict[str, Any]) -> None:
    """Run ``hooks`` of ``kind`` in order with ``state`` on stdin.

    Raises SystemFailure at the first failure, except for poststart and poststop hooks,
    whose failures are logged and skipped.
    """
    for index, hook in enumerate(hooks):
        try:
            run_hook(hook, state, f"{kind}[{index}]")
        except SystemFailure as error:
            if kind not in _WARNING_ONLY:
                raise
            log.warning("container %s: %s", state.get("id"), error)


def run_hook(hook: Hook, state: dict[str, Any], name: str) -> None:
    import subprocess

    argv = hook.args or [hook.path]
    environment = dict(entry.split("=", 1) for entry in hook.env if "=" in entry)
    try:
        completed = subprocess.run(
            argv,
            executable=hook.path,
            input=json_text.dumps(state).encode(),
            env=environment,
            capture_output=True,
            timeout=hook.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SystemFailure(
            f"hook {name} ({hook.path}) timed out after {hook.timeout} s and was killed"
        ) from None
    except OSError as error:
        raise SystemFailure(f"cannot run hook {name} ({hook.path}): {error.strerror}") from None
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout)[-_OUTPUT_KEPT:]
        text = output.decode(errors="replace").strip()
        status = (
            f"was killed by signal {-completed.returncode}"
            if completed.returncode < 0
            else f"exited with status {completed.returncode}"
        )
        detail = f": {text}" if text else ""
        raise SystemFailure(f"hook {name} ({hook.path}) {status}{detail}")


def _invalid(where: str, expected: str) -> InvalidArgument:
    return InvalidArgument(f"invalid config.json: {where}: expected {expected}")
