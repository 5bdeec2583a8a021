"""The default seccomp profile in containers run by a real ketchd with the docker CLI.

The blocked call is one docker's profile also blocks: unshare without CAP_SYS_ADMIN.
busybox has no keyctl or add_key applet, so those are checked only in the unit tests.
Common programs must still work under the profile.
"""

from __future__ import annotations

import shutil

import pytest

from support.daemon import KetchDaemon

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def run(daemon: KetchDaemon, *args: str) -> tuple[int, str]:
    result = daemon.docker("run", "--rm", "--network", "none", *args, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_default_blocks_unshare(daemon: KetchDaemon) -> None:
    code, output = run(daemon, "busybox", "unshare", "-m", "true")
    assert code != 0, output
    assert "Operation not permitted" in output


def test_default_allows_common_programs(daemon: KetchDaemon) -> None:
    script = "ls / >/dev/null && ps >/dev/null && date >/dev/null && echo done"
    code, output = run(daemon, "busybox", "sh", "-c", script)
    assert code == 0, output
    assert output.strip() == "done"


def test_default_allows_loopback_wget(daemon: KetchDaemon) -> None:
    script = (
        "mkdir /www && echo served >/www/index.html && "
        "httpd -p 127.0.0.1:8080 -h /www && "
        "wget -q -O - http://127.0.0.1:8080/index.html"
    )
    code, output = run(daemon, "busybox", "sh", "-c", script)
    assert code == 0, output
    assert output.strip() == "served"


def test_unconfined_allows_user_namespace(daemon: KetchDaemon) -> None:
    # The kernel lets any process create a user namespace, so only seccomp blocks it.
    code, output = run(
        daemon, "--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "true"
    )
    assert code == 0, output


def test_default_filter_is_loaded(daemon: KetchDaemon) -> None:
    code, output = run(daemon, "busybox", "grep", "^Seccomp:", "/proc/self/status")
    assert code == 0, output
    assert output.split() == ["Seccomp:", "2"]


def test_unconfined_loads_no_filter(daemon: KetchDaemon) -> None:
    code, output = run(
        daemon,
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    )
    assert code == 0, output
    assert output.split() == ["Seccomp:", "0"]


def test_cap_add_sys_admin_allows_unshare(daemon: KetchDaemon) -> None:
    code, output = run(daemon, "--cap-add", "SYS_ADMIN", "busybox", "unshare", "-m", "true")
    assert code == 0, output


def test_privileged_allows_unshare(daemon: KetchDaemon) -> None:
    code, output = run(daemon, "--privileged", "busybox", "unshare", "-m", "true")
    assert code == 0, output


def test_default_blocks_user_namespace(daemon: KetchDaemon) -> None:
    code, output = run(daemon, "busybox", "unshare", "-U", "true")
    assert code != 0, output
    assert "Operation not permitted" in output
