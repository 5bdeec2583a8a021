"""The supervisor's start: its command line parsed without argparse in the usual forms, and
the modules the supervisor process leaves out to keep its memory small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ketch.supervisor import __main__ as supervisor_main

PLAIN_FORMS = [
    [],
    ["--exec-root", "/run/x", "--detach"],
    ["--exec-root=/run/x", "--log-level", "debug", "--shutdown-timeout=2.5"],
    ["--detach", "--log-level=error", "--shutdown-timeout", "0", "--exec-root", "rel"],
]


@pytest.mark.parametrize("argv", PLAIN_FORMS)
def test_plain_forms_match_argparse(argv: list[str]) -> None:
    plain = supervisor_main._parse_plain_forms(argv)
    assert plain is not None
    assert plain == supervisor_main._parse_with_argparse(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--exec"],
        ["--exec-root"],
        ["--log-level", "loud"],
        ["--shutdown-timeout", "soon"],
        ["--shutdown-timeout", "-1"],
        ["--detach=yes"],
        ["extra"],
    ],
)
def test_other_forms_left_to_argparse(argv: list[str]) -> None:
    assert supervisor_main._parse_plain_forms(argv) is None


def test_invalid_level_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        supervisor_main.parse_arguments(["--log-level", "loud"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_supervisor_imports_exclude_heavy_modules() -> None:
    heavy = ("argparse", "dataclasses", "typing", "inspect", "shutil")
    code = (
        "import sys\n"
        "from ketch.supervisor import __main__ as main, server\n"
        "main.parse_arguments(['--exec-root', '/run/x', '--detach'])\n"
        f"print(*(name for name in {heavy!r} if name in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "\n"


def test_record_round_trip(tmp_path: Path) -> None:
    from ketch.supervisor.records import ContainerRecord, RecordStore

    store = RecordStore(tmp_path / "records")
    record = ContainerRecord("web", "/b", "/l", 12, status="stopped", exit_code=3)
    store.save(record)
    assert store.load_all() == [record]
    assert repr(record).startswith("ContainerRecord(id='web', bundle='/b'")
