"""The exit codes of finished execs that the supervisor remembers for a restarted engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch.supervisor.execs import MAX_FINISHED_EXECS, ExecProcesses


@dataclass
class FakeRecord:
    pid: int = 4242


@dataclass
class FakeExec:
    """The parts of a supervisor Container that the finish of an exec reads."""

    id: str
    exit_code: int = 0
    record: FakeRecord = field(default_factory=FakeRecord)

    def close(self) -> None:
        pass


def _execs(tmp_path: Path) -> tuple[ExecProcesses, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    execs = ExecProcesses(None, None, tmp_path, lambda pid, process: None, events.append)  # type: ignore[arg-type]
    return execs, events


def _finish(execs: ExecProcesses, container_id: str, exec_id: str, exit_code: int = 0) -> None:
    """Run an exec's finish as the supervisor does once it is reaped and its output ended."""
    execs._parents[exec_id] = container_id
    execs._finished(FakeExec(exec_id, exit_code))  # type: ignore[arg-type]


def test_exit_codes_kept_per_container(tmp_path: Path) -> None:
    execs, _ = _execs(tmp_path)
    _finish(execs, "quiet", "only-exec", 7)
    for number in range(MAX_FINISHED_EXECS + 1):
        _finish(execs, "busy", f"probe-{number}")

    quiet_states = execs.states("quiet")
    assert [state["exec_id"] for state in quiet_states] == ["only-exec"]
    assert quiet_states[0]["exit_code"] == 7
    assert quiet_states[0]["status"] == "stopped"


def test_exit_codes_bounded_per_container(tmp_path: Path) -> None:
    execs, _ = _execs(tmp_path)
    for number in range(MAX_FINISHED_EXECS + 5):
        _finish(execs, "busy", f"probe-{number}")

    exec_ids = [state["exec_id"] for state in execs.states("busy")]
    assert len(exec_ids) == MAX_FINISHED_EXECS
    assert exec_ids[0] == "probe-5"
    assert exec_ids[-1] == f"probe-{MAX_FINISHED_EXECS + 4}"


def test_exit_codes_forgotten_with_container(tmp_path: Path) -> None:
    execs, events = _execs(tmp_path)
    _finish(execs, "gone", "finished-exec")
    execs._parents["still-running"] = "gone"

    execs.forget_container("gone")
    _finish(execs, "gone", "still-running", 137)

    assert execs.states("gone") == []
    assert execs._exit_states == {}
    assert execs._orphans == set()
    assert events[-1] == {
        "type": "exec_exit",
        "id": "gone",
        "exec_id": "still-running",
        "exit_code": 137,
    }
