"""Fixtures for the runtime conformance suite: one set of cases, run against every runtime.

Each test takes the ``oci`` fixture, which is parametrized over the runtimes in
``RUNTIMES``: ``ketch-runc`` (the venv's script) and Debian's ``runc``. A test writes an
OCI bundle over a busybox rootfs, runs the runtime's command line on it and asserts what
the process inside reports or what the runtime prints, with the same assertions for
every runtime. A case that needs a feature one runtime lacks calls
``oci.gap("reason", runtime=...)``, which marks it xfail (not strict) for that runtime
only (ketch-runc unless named), so the counts per runtime show the gap and an unexpected
pass shows when it closes.

Per test, under the test's tmp_path::

    state/               the runtime's --root
    bundles/<id>/        config.json; root.path points at the shared rootfs
    out/<n>.out, <n>.err stdout and stderr of the n-th command

Every container gets the relative cgroupsPath ``<parent>/<id>``, so its cgroups sit
under the test process's own cgroup in each hierarchy. At the end the fixture
force-deletes every container it made and removes ``<parent>`` in every hierarchy.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.cgroups import own_cgroup_directories
from support.rootfs import bundle_config, make_busybox_rootfs

RUNTIMES = {
    "ketch-runc": Path(sys.executable).parent / "ketch-runc",
    "runc": Path("/usr/sbin/runc"),
}

COMMAND_TIMEOUT = 60.0


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


class OciRuntime:
    """The command line of one OCI runtime, with a private --root and cgroup parent."""

    def __init__(self, name: str, binary: Path, workdir: Path, rootfs: Path, request) -> None:
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.root = workdir / "state"
        self.rootfs = rootfs
        self.cgroup_parent = f"ketch-conformance-{secrets.token_hex(4)}"
        self.ids: list[str] = []
        self._request = request
        self._counter = 0
        (workdir / "out").mkdir(parents=True, exist_ok=True)

    def gap(self, reason: str, runtime: str = "ketch-runc") -> None:
        """Mark the running test xfail for ``runtime``, which lacks what the case needs."""
        if self.name == runtime:
            self._request.applymarker(pytest.mark.xfail(reason=reason, strict=False))

    def __call__(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> Completed:
        """Run ``<runtime> --root <state> args`` and return its status and output.

        Output goes to files, not pipes, because a created container keeps the stdout
        and stderr it inherits from ``create``, so a pipe would stay open after it exits.
        """
        self._counter += 1
        out_path = self.workdir / "out" / f"{self._counter}.out"
        err_path = self.workdir / "out" / f"{self._counter}.err"
        command = [str(self.binary), "--root", str(self.root), *args]
        with open(out_path, "w+") as out, open(err_path, "w+") as err:
            completed = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout
            )
        return Completed(completed.returncode, out_path.read_text(), err_path.read_text())

    def new_id(self) -> str:
        return f"conf{len(self.ids) + 1}"

    def config(self, args: list[str], **changes: Any) -> dict[str, Any]:
        """Return a config for ``args`` over the shared rootfs, as ``runc spec`` writes it
        but with the terminal off and the rootfs writable. :meth:`bundle` fills in an empty
        cgroupsPath."""
        config = bundle_config(self.rootfs, args, **changes)
        config["linux"].setdefault("cgroupsPath", "")
        return config

    def bundle(self, config: dict[str, Any], container_id: str | None = None) -> tuple[str, Path]:
        """Write ``config`` as a bundle; return (container id, bundle directory)."""
        container_id = container_id or self.new_id()
        config = json.loads(json.dumps(config))
        if not config["linux"].get("cgroupsPath"):
            config["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{container_id}"
        directory = self.workdir / "bundles" / container_id
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        self.ids.append(container_id)
        return container_id, directory

    def run(self, args: list[str], **changes: Any) -> Completed:
        """Run ``args`` to the end with ``run``; return the exit status and output."""
        container_id, directory = self.bundle(self.config(args, **changes))
        return self("run", "--bundle", str(directory), container_id)

    def run_config(self, config: dict[str, Any]) -> Completed:
        container_id, directory = self.bundle(config)
        return self("run", "--bundle", str(directory), container_id)

    def create(self, args: list[str], **changes: Any) -> tuple[str, Completed]:
        """Create a container running ``args``; return its id and the command's result."""
        container_id, directory = self.bundle(self.config(args, **changes))
        return container_id, self("create", "--bundle", str(directory), container_id)

    def state(self, container_id: str) -> dict[str, Any]:
        result = self("state", container_id)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def wait_for_status(self, container_id: str, status: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(container_id)["status"] == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: container {container_id} never became {status}")

    def cgroup_directories(self, container_id: str) -> list[Path]:
        """Return the container's cgroup directories that exist, in every hierarchy."""
        return own_cgroup_directories(f"{self.cgroup_parent}/{container_id}")

    def close(self) -> list[str]:
        """Force-delete every container, remove the cgroup parent; return what failed."""
        errors = []
        for container_id in self.ids:
            if not (self.root / container_id).exists():
                continue
            result = self("delete", "--force", container_id)
            if result.returncode != 0 and "not exist" not in result.stderr:
                errors.append(f"delete {container_id}: {result.stderr.strip()}")
        for directory in own_cgroup_directories(self.cgroup_parent):
            errors.extend(remove_cgroup_tree(directory))
        return errors


def remove_cgroup_tree(directory: Path) -> list[str]:
    """Remove an empty cgroup directory and its children, deepest first."""
    errors = []
    children = sorted(
        (Path(parent) for parent, _, _ in os.walk(directory)),
        key=lambda path: len(path.parts),
        reverse=True,
    )
    for child in children:
        try:
            child.rmdir()
        except OSError as error:
            errors.append(f"{child}: {error}")
    return errors


@pytest.fixture(scope="session")
def conformance_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rootfs = make_busybox_rootfs(tmp_path_factory.mktemp("conformance") / "rootfs")
    (rootfs / "marker").write_text("conformance rootfs\n")
    return rootfs


@pytest.fixture(params=list(RUNTIMES))
def oci(request, tmp_path: Path, conformance_rootfs: Path) -> Iterator[OciRuntime]:
    binary = RUNTIMES[request.param]
    if not binary.exists():
        pytest.skip(f"{request.param} is not installed at {binary}")
    runtime = OciRuntime(request.param, binary, tmp_path, conformance_rootfs, request)
    try:
        yield runtime
    finally:
        errors = runtime.close()
        shutil.rmtree(runtime.workdir / "bundles", ignore_errors=True)
        assert not errors, errors
