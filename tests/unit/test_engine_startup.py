"""ketchd's start-up imports: the packages that only some requests need stay out of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Imported at the first request that needs it: a user-defined network's name server (dns).
# aiohttp, yarl and pyroute2 are no runtime dependency at all, and ketch must not import
# them even if they are installed.
DEFERRED_PACKAGES = ("dns",)
ABSENT_PACKAGES = ("aiohttp", "yarl", "pyroute2")

STARTUP_CODE = """
import asyncio
import sys

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
packages = {name.split(".")[0] for name in sys.modules}
print("loaded:", *sorted(packages))
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ketchd_startup_excludes_deferred_packages(tmp_path: Path) -> None:
    config_file = tmp_path / "daemon.json"
    config_file.write_text("{}")
    completed = run_python(
        STARTUP_CODE,
        "--data-root", str(tmp_path / "data"),
        "--exec-root", str(tmp_path / "exec"),
        "--config-file", str(config_file),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    loaded = completed.stdout.split()
    assert loaded[0] == "loaded:"
    for package in DEFERRED_PACKAGES + ABSENT_PACKAGES:
        assert package not in loaded, f"ketchd's start imported {package}"
    # The check above would pass if nothing were imported at all.
    assert "sqlite3" in loaded
