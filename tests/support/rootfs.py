"""A busybox rootfs and OCI bundles for tests that run real containers.

``busybox_rootfs`` is a pytest fixture; tests that use it import it from here::

    from support.rootfs import busybox_rootfs, write_bundle  # noqa: F401

It builds, in the test's tmp_path::

    rootfs/
        bin/busybox            copied from /bin/busybox (Debian's busybox-static)
        bin/<applet>           symlinks to busybox, one per applet it lists
        etc/passwd, etc/group  root, nobody and a user "app" with uid and gid 1000
        tmp/, root/, home/app/

``write_bundle(directory, rootfs, args, **changes)`` writes ``directory/config.json`` from
``ketch.runtime.spec.default_spec`` with the terminal off and the rootfs writable, and
returns the directory.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ketch.runtime.spec import default_spec

BUSYBOX = Path("/bin/busybox")

PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """root:x:0:
app:x:1000:
extra:x:2000:app
nogroup:x:65534:
"""

_applets: list[str] | None = None


def busybox_applets() -> list[str]:
    global _applets
    if _applets is None:
        output = subprocess.run(
            [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
        ).stdout
        _applets = [name for name in output.split() if name and "/" not in name]
    return _applets


def make_busybox_rootfs(directory: Path) -> Path:
    """Build the rootfs described in the module docstring at ``directory``."""
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (/bin/busybox)")
    for name in ("bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, directory / "bin/busybox")
    for applet in busybox_applets():
        link = directory / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (directory / "etc/passwd").write_text(PASSWD)
    (directory / "etc/group").write_text(GROUP)
    return directory


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    return make_busybox_rootfs(tmp_path / "rootfs")


def bundle_config(rootfs: Path, args: list[str], **changes: Any) -> dict[str, Any]:
    """Return a config for ``args`` in ``rootfs``; keyword arguments replace top-level
    keys, and ``process``/``linux`` given as dicts are merged into the defaults."""
    config = default_spec(args)
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": False}
    for key, value in changes.items():
        if key in ("process", "linux") and isinstance(value, dict):
            config[key].update(copy.deepcopy(value))
        else:
            config[key] = copy.deepcopy(value)
    return config


def write_bundle(directory: Path, rootfs: Path, args: list[str], **changes: Any) -> Path:
    """Write ``directory/config.json`` from :func:`bundle_config` and return ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = bundle_config(rootfs, args, **changes)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
