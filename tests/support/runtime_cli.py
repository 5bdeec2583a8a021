"""Run ``ketch-runc`` as a command over a :class:`support.rootfs.ContainerRunner`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


class Cli:
    """Runs ``python -m ketch.runtime.cli`` with the runner's state root and bundles."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.root = runner.runtime.state_root

    def __call__(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ketch.runtime.cli", "--root", str(self.root), *args]
        # Files, not pipes: a created container keeps the stdout and stderr it inherits
        # from `create`, so a pipe would not reach end of file when the command exits.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            completed = subprocess.run(command, stdout=out, stderr=err, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(
                command, completed.returncode, out.read(), err.read()
            )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "ketch.runtime.cli", "--root", str(self.root), *args]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL)

    def bundle(self, container_id: str, args: list[str]) -> Path:
        self.runner.ids.append(container_id)
        return self.runner.bundle(container_id, args)
