"""ketchd's start-up imports: the packages that only some requests need stay out of it,
and the stand-in modules that defer aiohttp and yarl load the real ones on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Imported at the first request that needs each: a registry request (aiohttp, yarl), a
# bridge endpoint or network change (pyroute2), a user-defined network's name server (dns).
DEFERRED_PACKAGES = ("aiohttp", "yarl", "pyroute2", "dns")

STARTUP_CODE = """
import asyncio
import sys

from ketch.engine import daemon
from ketch.engine.config import load_config
from ketch.engine.deferred_imports import defer_imports, is_loaded
from ketch.network.links import owned_links

defer_imports()  # as daemon.main does before it runs the daemon
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
print("loaded:", *sorted(name for name in packages if is_loaded(name)))
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
    for package in DEFERRED_PACKAGES:
        assert package not in loaded, f"ketchd's start imported {package}"
    # The check above would pass if nothing were imported at all.
    assert "sqlite3" in loaded


def test_deferred_module_loads_on_attribute() -> None:
    completed = run_python(
        "import sys\n"
        "from ketch.engine.deferred_imports import defer_imports, is_loaded\n"
        "defer_imports(('colorsys',))\n"
        "import colorsys\n"
        "print(is_loaded('colorsys'))\n"
        "print(colorsys.rgb_to_hsv(1.0, 0.0, 0.0))\n"
        "print(is_loaded('colorsys'), sys.modules['colorsys'] is not colorsys)\n"
        "print(colorsys.hsv_to_rgb(0.0, 1.0, 1.0))\n"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "False",
        "(0.0, 1.0, 1.0)",
        "True True",
        "(1.0, 0.0, 0.0)",
    ]


def test_deferred_package_loads_for_submodule() -> None:
    completed = run_python(
        "import sys\n"
        "from ketch.engine.deferred_imports import defer_imports, is_loaded\n"
        "defer_imports(('xmlrpc',))\n"
        "import xmlrpc\n"
        "print(is_loaded('xmlrpc'), 'xmlrpc.client' in sys.modules)\n"
        "import xmlrpc.client\n"
        "print(is_loaded('xmlrpc'), xmlrpc.client.MAXINT)\n"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["False False", "True 2147483647"]


def test_deferred_missing_package_left_alone() -> None:
    completed = run_python(
        "import sys\n"
        "from ketch.engine.deferred_imports import defer_imports\n"
        "defer_imports(('no_such_package_ketch',))\n"
        "print('no_such_package_ketch' in sys.modules)\n"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "False\n"
