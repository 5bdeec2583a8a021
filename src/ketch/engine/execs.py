"""Exec instances: ``POST /containers/{id}/exec``, ``/exec/{id}/start``, ``/json`` and
``/resize``.

An exec is created as a record in memory and on disk (see ``exec_records``) and runs when
it is started. Its process is the container's own process from ``bundle/config.json``
with the exec's command, environment, working directory, user and terminal, so it gets
the container's capabilities, rlimits and security settings. The supervisor runs it and
streams its output; the stream ends with the exit code, which the engine records before
it closes the client's stream, so an inspect right after the output ends sees the code.
An exec whose process does not start is finished at once, as in dockerd: exit code 127
when the command does not exist, 126 for any other failure.

The records of a container's execs go when the container is removed, and only the
newest ``MAX_FINISHED_EXECS`` finished execs of a container are kept before that, because
every healthcheck probe is an exec.

After a restart of ketchd, ``reconcile`` loads the records and queries the supervisor for
the execs that were running: one that ended meanwhile gets its exit code and its
``exec_die`` event then. The supervisor remembers exit codes only while it runs, so when
it has restarted too, such an exec is recorded as not running with no exit code.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ketch.engine.container_start import (
    EXIT_COMMAND_NOT_EXECUTABLE,
    EXIT_COMMAND_NOT_FOUND,
    is_command_not_found,
)
from ketch.engine.containers import ContainerService
from ketch.engine.exec_records import ExecRecords
from ketch.engine.spec import merge_env
from ketch.engine.store import Container, ContainerPaths
from ketch.engine.userdb import resolve_user_in_rootfs
from ketch.errors import Conflict, Forbidden, InvalidArgument, KetchError, NotFound

logger = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct(">BxxxI")
STREAM_EXIT = 255  # the supervisor's last frame of an exec stream, see its protocol
READ_SIZE = 64 * 1024
MAX_FINISHED_EXECS = 100

# dockerd 28 (through containerd and runc) reports a failed command lookup with these
# words around runc's message. "unknown" is the gRPC status that containerd adds.
EXEC_FAILED_PREFIX = "OCI runtime exec failed: exec failed: unable to start container process: "
EXEC_FAILED_SUFFIX = ": unknown"
# The start of the runtime's messages for a command that it cannot find or run.
LOOKUP_ERROR_START = "exec: "


def exec_failure_exit_code(message: str) -> int:
    """Return docker's exit code for an exec start that failed with ``message``: 127
    when the command does not exist, 126 for every other failure."""
    if is_command_not_found(message):
        return EXIT_COMMAND_NOT_FOUND
    return EXIT_COMMAND_NOT_EXECUTABLE


def exec_start_error(error: KetchError) -> KetchError:
    """Return the error to report for an exec whose process did not start.

    A failed command lookup becomes dockerd's message, with dockerd's status 400,
    because clients show that message as it is. Other errors stay as they are.
    """
    is_lookup = isinstance(error, (NotFound, Forbidden))
    if not is_lookup or not str(error).startswith(LOOKUP_ERROR_START):
        return error
    return InvalidArgument(f"{EXEC_FAILED_PREFIX}{error}{EXEC_FAILED_SUFFIX}")


@dataclass
class ExecInstance:
    """One exec: what to run and, once started, its pid, state and exit code."""

    id: str
    container_id: str
    cmd: list[str]
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None
    started: bool = False
    running: bool = False
    pid: int = 0
    exit_code: int | None = None
    created_ns: int = field(default_factory=time.time_ns)
    # The exit code from the end of the output stream, before it is recorded.
    stream_exit_code: int | None = field(default=None, compare=False)

    def to_record(self) -> dict[str, Any]:
        """Return the fields that the record on disk keeps."""
        record = asdict(self)
        del record["stream_exit_code"]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ExecInstance:
        known = {item.name for item in fields(cls)} - {"stream_exit_code"}
        values = {key: value for key, value in record.items() if key in known}
        if values.get("console_size") is not None:
            values["console_size"] = tuple(values["console_size"])
        return cls(**values)


@dataclass
class ExecSession:
    """A started exec for the API: raw (TTY) or framed output, and a stdin writer."""

    raw: bool
    output: AsyncIterator[bytes]
    stdin: Any = None  # an asyncio.StreamWriter when the exec attached stdin
    detach_keys: str = ""


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"invalid exec config: {key} must be a list of strings")
    return list(value)


def _flag(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid exec config: {key} must be true or false")
    return value


def _console_size(body: dict[str, Any]) -> tuple[int, int] | None:
    size = body.get("ConsoleSize")
    if size is None:
        return None
    valid = isinstance(size, list) and len(size) == 2
    if not valid or not all(isinstance(n, int) and not isinstance(n, bool) for n in size):
        raise InvalidArgument("invalid exec config: ConsoleSize must be [height, width]")
    if size == [0, 0]:
        return None
    return (size[0], size[1])


def parse_exec_config(container_id: str, body: Any) -> ExecInstance:
    """Check an exec create body and return the exec it describes."""
    if not isinstance(body, dict):
        raise InvalidArgument("invalid exec config: expected a JSON object")
    cmd = _string_list(body, "Cmd")
    if not cmd:
        raise InvalidArgument("No exec command specified")
    if _flag(body, "Privileged"):
        raise InvalidArgument("invalid exec config: Privileged execs are not supported by ketch")
    for key in ("User", "WorkingDir", "DetachKeys"):
        if not isinstance(body.get(key) or "", str):
            raise InvalidArgument(f"invalid exec config: {key} must be a string")
    working_dir = body.get("WorkingDir") or ""
    if working_dir and not working_dir.startswith("/"):
        raise InvalidArgument(
            f"invalid exec config: WorkingDir {working_dir!r} must be an absolute path"
        )
    return ExecInstance(
        id=secrets.token_hex(32),
        container_id=container_id,
        cmd=cmd,
        tty=_flag(body, "Tty"),
        attach_stdin=_flag(body, "AttachStdin"),
        attach_stdout=_flag(body, "AttachStdout"),
        attach_stderr=_flag(body, "AttachStderr"),
        env=_string_list(body, "Env"),
        user=body.get("User") or "",
        working_dir=working_dir,
        detach_keys=body.get("DetachKeys") or "",
        console_size=_console_size(body),
    )


class ExecService:
    """Every exec of one engine, by exec id. Used from the event loop only."""

    def __init__(self, containers: ContainerService, paths: ContainerPaths) -> None:
        self._containers = containers
        self._paths = paths
        self._records = ExecRecords(paths)
        self._execs: dict[str, ExecInstance] = {}
        # Execs whose output this ketchd streams; the others were restored from disk.
        self._streaming: set[str] = set()
        self._loaded = False

    def create(self, reference: str, body: Any) -> dict[str, str]:
        container = self._containers.resolve(reference)
        self._check_running(container)
        instance = parse_exec_config(container.id, body)
        self._forget_removed_containers()
        self._forget_old_execs(container.id)
        self._execs[instance.id] = instance
        self._save(instance)
        self._containers.emit(
            container, f"exec_create: {' '.join(instance.cmd)}", execID=instance.id
        )
        return {"Id": instance.id}

    def get(self, exec_id: str) -> ExecInstance:
        instance = self._execs.get(exec_id)
        if instance is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return instance

    def ids_of(self, container_id: str) -> list[str]:
        """Return the ids of the container's running execs (inspect's ExecIDs)."""
        return [e.id for e in self._execs.values() if e.container_id == container_id and e.running]

    def _forget_removed_containers(self) -> None:
        existing = {container.id for container in self._containers.all()}
        for instance in list(self._execs.values()):
            if instance.container_id not in existing:
                del self._execs[instance.id]

    def _forget_old_execs(self, container_id: str) -> None:
        finished = [
            instance
            for instance in self._execs.values()
            if instance.container_id == container_id and instance.started and not instance.running
        ]
        finished.sort(key=lambda instance: instance.created_ns)
        for instance in finished[: max(0, len(finished) - MAX_FINISHED_EXECS)]:
            del self._execs[instance.id]
            self._records.remove(container_id, instance.id)

    def _save(self, instance: ExecInstance) -> None:
        self._records.save(instance.container_id, instance.id, instance.to_record())

    def check_start(self, exec_id: str) -> None:
        """Raise the error a start of the exec would raise now, without starting it."""
        instance = self.get(exec_id)
        if instance.started:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        self._check_running(self._containers.resolve(instance.container_id))

    async def start(self, exec_id: str, detach: bool, tty: bool | None = None) -> ExecSession:
        """Run the exec; the session's output ends once its process has exited."""
        self.check_start(exec_id)
        instance = self.get(exec_id)
        container = self._containers.resolve(instance.container_id)
        if tty is not None:
            instance.tty = instance.tty or tty
        process = self._process(container, instance)
        open_stdin = instance.attach_stdin and not detach
        instance.started = True
        try:
            source, writer, pid = await self._containers.supervisor.exec(
                container.id, instance.id, process, tty=instance.tty, open_stdin=open_stdin
            )
        except KetchError as error:
            raise self._record_start_failure(instance, error) from None
        instance.running = True
        instance.pid = pid
        self._streaming.add(instance.id)
        self._save(instance)
        self._containers.emit(container, f"exec_start: {' '.join(instance.cmd)}", execID=exec_id)
        output = self._pump(instance, container, source, detach)
        return ExecSession(
            raw=instance.tty,
            output=output,
            stdin=writer if open_stdin else None,
            detach_keys=instance.detach_keys,
        )

    def _record_start_failure(self, instance: ExecInstance, error: KetchError) -> KetchError:
        """Record an exec whose process did not start as finished, and return the error
        to report.

        As in dockerd, the exec has then run: its exit code is 127 when the command was
        not found, else 126, and a second start is a conflict.
        """
        instance.exit_code = exec_failure_exit_code(str(error))
        instance.running = False
        self._save(instance)
        logger.info(
            "exec %s in container %s failed to start (exit code %d): %s",
            instance.id,
            instance.container_id,
            instance.exit_code,
            error,
        )
        return exec_start_error(error)

    def _check_running(self, container: Container) -> None:
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        if container.state.paused:
            raise Conflict(f"Container {container.id} is paused, unpause the container before exec")

    def _process(self, container: Container, instance: ExecInstance) -> dict[str, Any]:
        spec_path = self._paths.bundle(container.id) / "config.json"
        process = copy.deepcopy(json.loads(spec_path.read_text())["process"])
        process["args"] = list(instance.cmd)
        process["terminal"] = instance.tty
        env = merge_env(list(process.get("env") or []), instance.env)
        if instance.tty and not any(entry.startswith("TERM=") for entry in env):
            env.append("TERM=xterm")
        process["env"] = env
        if instance.working_dir:
            process["cwd"] = instance.working_dir
        if instance.console_size is not None:
            height, width = instance.console_size
            process["consoleSize"] = {"height": height, "width": width}
        if instance.user:
            user = resolve_user_in_rootfs(instance.user, Path(container.rootfs))
            process["user"] = {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": list(user.additional_gids),
            }
            if user.uid != 0:
                # As for the init: a non-root user holds no effective capabilities.
                capabilities = process.get("capabilities") or {}
                capabilities["effective"] = []
                capabilities["permitted"] = []
                process["capabilities"] = capabilities
        return process

    async def _pump(
        self, instance: ExecInstance, container: Container, source: Any, detach: bool
    ) -> AsyncIterator[bytes]:
        """Yield the exec's output for the client and record its exit code at the end."""
        wanted = {1: instance.attach_stdout, 2: instance.attach_stderr}
        buffer = b""
        try:
            while True:
                chunk = await source.read(READ_SIZE)
                if not chunk:
                    break
                buffer += chunk
                pieces, buffer = self._split_frames(instance, buffer, wanted)
                if pieces and not detach:
                    yield pieces
        finally:
            source.close()
            self._streaming.discard(instance.id)
            self._finish(instance)

    def _split_frames(
        self, instance: ExecInstance, buffer: bytes, wanted: dict[int, bool]
    ) -> tuple[bytes, bytes]:
        """Take the whole frames off ``buffer``; return what to send and the rest."""
        out = bytearray()
        while len(buffer) >= FRAME_HEADER.size:
            stream, length = FRAME_HEADER.unpack_from(buffer)
            end = FRAME_HEADER.size + length
            if len(buffer) < end:
                break
            payload = buffer[FRAME_HEADER.size : end]
            if stream == STREAM_EXIT:
                instance.stream_exit_code = int(json.loads(payload)["exit_code"])
            elif wanted.get(stream):
                out += payload if instance.tty else buffer[:end]
            buffer = buffer[end:]
        return bytes(out), buffer

    def _finish(self, instance: ExecInstance) -> None:
        if instance.stream_exit_code is not None:
            self._record_exit(instance, instance.stream_exit_code)
        elif instance.running:
            # The stream broke before its last frame; an exec_exit event may still come.
            logger.warning("exec %s: the output stream ended without an exit code", instance.id)
            instance.running = False
            self._save(instance)

    def _record_exit(self, instance: ExecInstance, exit_code: int) -> None:
        """Record the exec's exit code and publish ``exec_die``, once per exec."""
        if instance.exit_code is not None:
            return
        instance.exit_code = exit_code
        instance.running = False
        self._save(instance)
        try:
            container = self._containers.resolve(instance.container_id)
        except NotFound:
            return
        self._containers.emit(
            container, "exec_die", execID=instance.id, exitCode=str(instance.exit_code)
        )

    def handle_exit(self, event: dict[str, Any]) -> None:
        """Record an exec's exit from the supervisor's event stream, if not done yet."""
        instance = self._execs.get(str(event.get("exec_id")))
        exit_code = event.get("exit_code")
        if instance is None or not isinstance(exit_code, int):
            return
        self._record_exit(instance, exit_code)

    async def reconcile(self) -> None:
        """Load the exec records once, then settle the execs that the records show as
        running but whose output this ketchd does not stream, with the supervisor."""
        if not self._loaded:
            self._load_records()
        unsettled: dict[str, list[ExecInstance]] = {}
        for instance in self._execs.values():
            if instance.running and instance.id not in self._streaming:
                unsettled.setdefault(instance.container_id, []).append(instance)
        for container_id, instances in unsettled.items():
            try:
                states = await self._containers.supervisor.execs(container_id)
            except KetchError as error:
                logger.warning("failed to read the execs of container %s: %s", container_id, error)
                continue
            by_id = {state.get("exec_id"): state for state in states}
            for instance in instances:
                self._settle(instance, by_id.get(instance.id))

    def _load_records(self) -> None:
        self._loaded = True
        restored = []
        for container in self._containers.all():
            for record in self._records.load(container.id):
                try:
                    restored.append(ExecInstance.from_record(record))
                except (AttributeError, TypeError, ValueError) as error:
                    # A record that is valid JSON but not an exec object lands here.
                    logger.warning("skipping an exec record of %s: %s", container.id, error)
        for instance in sorted(restored, key=lambda instance: instance.created_ns):
            self._execs.setdefault(instance.id, instance)
        if restored:
            logger.info("restored %d exec records", len(restored))

    def _settle(self, instance: ExecInstance, state: dict[str, Any] | None) -> None:
        if state is None:
            logger.warning(
                "exec %s of container %s: the supervisor has no state for it, so its exit "
                "code is lost",
                instance.id,
                instance.container_id,
            )
            instance.running = False
            self._save(instance)
        elif state.get("status") == "stopped" and isinstance(state.get("exit_code"), int):
            self._record_exit(instance, state["exit_code"])

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        instance = self.get(exec_id)
        if not instance.running:
            raise Conflict(f"exec {exec_id} is not running")
        await self._containers.supervisor.resize(exec_id, height, width)

    def inspect(self, exec_id: str) -> dict[str, Any]:
        instance = self.get(exec_id)
        return {
            "ID": instance.id,
            "Running": instance.running,
            "ExitCode": instance.exit_code,
            "ProcessConfig": {
                "tty": instance.tty,
                "entrypoint": instance.cmd[0],
                "arguments": instance.cmd[1:],
                "privileged": False,
                "user": instance.user,
            },
            "OpenStdin": instance.attach_stdin,
            "OpenStderr": instance.attach_stderr,
            "OpenStdout": instance.attach_stdout,
            "CanRemove": False,
            "ContainerID": instance.container_id,
            "DetachKeys": instance.detach_keys,
            "Pid": instance.pid,
        }
