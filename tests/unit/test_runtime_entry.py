"""The faster ketch-runc entry script: written, executable, and runs the CLI without site."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ketch.runtime import entry


def test_entry_script_runs_version(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    entry.write_script(str(script))
    completed = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert completed.returncode == 0
    assert completed.stdout.startswith("ketch-runc version ")


def test_entry_script_is_executable(tmp_path: Path) -> None:
    script = tmp_path / "ketch-runc"
    entry.write_script(str(script))
    assert os.access(script, os.X_OK)


def test_entry_script_skips_site() -> None:
    text = entry.script_text("/usr/bin/python3", "/src")
    assert text.startswith("#!/usr/bin/python3 -S\n")


def test_entry_usage_without_path() -> None:
    assert entry.main([]) == 2
