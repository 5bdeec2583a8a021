"""ketchd's start leaves out the packages and engine modules that only some requests need.

Each module named here is imported by the request that needs it (archive, commit, logs,
stats, top, network requests, a user-defined network's name server), so ketchd's resident
memory at start does not include it. Some packages must never load at all. The checks run
in a fresh interpreter, because other tests in this session import these modules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Packages imported at the first request that needs them (dns for a user-defined
# network's name server).
DEFERRED_PACKAGES = ("dns",)
# Packages that ketch does not depend on at run time, so it must not import them even
# where they are installed.
ABSENT_PACKAGES = ("aiohttp", "yarl", "pyroute2")

DEFERRED_MODULES = (
    "ketch.engine.archive",
    "ketch.engine.commits",
    "ketch.engine.logs",
    "ketch.engine.networks",
    "ketch.engine.stats",
)

# Script that repeats ketchd's steps before it serves: build the daemon's parts and import
# the API server.
STARTUP_CODE = """
import asyncio
import sys

from ketch.api import server
from ketch.engine import daemon
from ketch.engine.config import load_config
from ketch.network.links import owned_links

config = load_config(sys.argv[1:])
daemon.make_roots(config)
db = daemon.open_database(config.data_root / "ketch.db")


async def build() -> None:
    parts = daemon.build_daemon(config, db)
    # The start's search for leftover links reads the link table.
    owned_links("ketch-")
    await parts.name_service.close()
    await parts.engine.close()


asyncio.run(build())
print("loaded:", *sorted(sys.modules))
"""

# The engine's network operations, which ketchd builds at the first network request.
NETWORKS_CODE = """
import asyncio
import sys

from ketch.engine import daemon
from ketch.engine.config import load_config

config = load_config(sys.argv[1:])
daemon.make_roots(config)
db = daemon.open_database(config.data_root / "ketch.db")


async def use_networks() -> None:
    parts = daemon.build_daemon(config, db)
    first = parts.engine.networks
    second = parts.engine.networks
    print("same object:", first is second)
    await parts.name_service.close()
    await parts.engine.close()


asyncio.run(use_networks())
print("loaded:", *sorted(sys.modules))
"""


def run_ketchd_code(code: str, tmp_path: Path) -> str:
    """Run ``code`` with ketchd's arguments for roots under ``tmp_path`` and return its output."""
    config_file = tmp_path / "daemon.json"
    config_file.write_text("{}")
    completed = subprocess.run(
        [
            sys.executable, "-c", code,
            "--data-root", str(tmp_path / "data"),
            "--exec-root", str(tmp_path / "exec"),
            "--config-file", str(config_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def loaded_modules(output: str) -> list[str]:
    """Return the module names that follow ``loaded:`` in ``output``."""
    _, found, modules = output.partition("loaded:")
    assert found, output
    return modules.split()


def test_startup_leaves_out_rare_modules(tmp_path: Path) -> None:
    loaded = loaded_modules(run_ketchd_code(STARTUP_CODE, tmp_path))

    for module in DEFERRED_MODULES:
        assert module not in loaded, f"ketchd's start imported {module}"
    # Without these the check above would also pass for a start that imported nothing.
    assert "ketch.engine.engine" in loaded
    assert "ketch.api.routes" in loaded


def test_startup_leaves_out_packages(tmp_path: Path) -> None:
    loaded = loaded_modules(run_ketchd_code(STARTUP_CODE, tmp_path))
    packages = {name.split(".")[0] for name in loaded}

    for package in DEFERRED_PACKAGES + ABSENT_PACKAGES:
        assert package not in packages, f"ketchd's start imported {package}"
    # The check above would pass if nothing were imported at all.
    assert "sqlite3" in packages


def test_network_operations_built_once(tmp_path: Path) -> None:
    output = run_ketchd_code(NETWORKS_CODE, tmp_path)

    assert "same object: True" in output
    assert "ketch.engine.networks" in loaded_modules(output)
