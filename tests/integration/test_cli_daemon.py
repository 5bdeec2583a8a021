"""The ``ketch`` CLI's commands against a real ketchd, as far as its routes go.

One ketchd per module, in a network namespace of its own, with busybox in its registry.
Each test names its containers after itself and removes them, so they run in any order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.daemon import VENV_BIN, KetchDaemon


@pytest.fixture
def names(daemon: KetchDaemon) -> Iterator[list[str]]:
    """Container names the test will create; they are removed afterwards."""
    created: list[str] = []
    try:
        yield created
    finally:
        if created:
            daemon.ketch("rm", "-f", *created)


def wait_for_state(daemon: KetchDaemon, name: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = daemon.ketch("inspect", "-f", "{{.State.Status}}", name)
        if result.stdout.strip() == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"container {name} did not reach {state}: {result.stdout}{result.stderr}")


def test_create_start_stop_wait(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-lifecycle")
    created = daemon.ketch("create", "--name", "cli-lifecycle", "busybox", "sleep", "100")
    assert created.returncode == 0, created.stderr
    assert daemon.ketch("start", "cli-lifecycle").stdout == "cli-lifecycle\n"
    wait_for_state(daemon, "cli-lifecycle", "running")
    stopped = daemon.ketch("stop", "-t", "1", "cli-lifecycle")
    assert stopped.stdout == "cli-lifecycle\n", stopped.stderr
    waited = daemon.ketch("wait", "cli-lifecycle")
    assert waited.stdout.strip() in ("137", "143"), waited.stderr


def test_start_attached_returns_status(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-start-a")
    daemon.ketch("create", "--name", "cli-start-a", "busybox", "sh", "-c", "echo out; exit 6")
    result = daemon.ketch("start", "-a", "cli-start-a")
    assert result.returncode == 6, result.stderr
    assert result.stdout == "out\n"


def test_kill_with_signal(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-kill")
    # As PID 1 the shell ignores signals it has no handler for, so it traps USR1.
    script = 'trap "exit 7" USR1; echo trapped; while true; do sleep 0.1; done'
    daemon.ketch("run", "-d", "--name", "cli-kill", "busybox", "sh", "-c", script)
    deadline = time.monotonic() + 30
    while "trapped" not in daemon.ketch("logs", "cli-kill").stdout:
        assert time.monotonic() < deadline, "the shell did not install its trap"
        time.sleep(0.2)
    result = daemon.ketch("kill", "-s", "USR1", "cli-kill")
    assert result.stdout == "cli-kill\n", result.stderr
    assert daemon.ketch("wait", "cli-kill").stdout.strip() == "7"


def test_inspect_format(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-inspect")
    daemon.ketch("create", "--name", "cli-inspect", "-l", "tier=front", "-e", "A=1", "busybox")
    template = '{{.Name}} {{index .Config.Labels "tier"}} {{json .Config.Env}}'
    result = daemon.ketch("inspect", "--format", template, "cli-inspect")
    assert result.returncode == 0, result.stderr
    name, tier, environment = result.stdout.split(" ", 2)
    assert name == "/cli-inspect"
    assert tier == "front"
    assert "A=1" in json.loads(environment)


def test_inspect_image_and_missing(daemon: KetchDaemon) -> None:
    daemon.ketch("pull", "-q", "busybox")
    result = daemon.ketch("inspect", "--type", "image", "-f", "{{.Id}}", "busybox", "nope")
    assert result.returncode == 1
    assert result.stdout.startswith("sha256:")
    assert result.stderr == "Error: No such image: nope\n"


def test_ps_format_and_filters(daemon: KetchDaemon, names: list[str]) -> None:
    names += ["cli-ps-up", "cli-ps-done"]
    daemon.ketch("run", "-d", "--name", "cli-ps-up", "-l", "app=shop", "busybox", "sleep", "100")
    daemon.ketch("run", "--name", "cli-ps-done", "busybox", "true")
    running = daemon.ketch("ps", "--format", '{{.Names}} {{.State}} {{.Label "app"}}')
    assert "cli-ps-up running shop" in running.stdout.splitlines(), running.stderr
    exited = daemon.ketch("ps", "-a", "-f", "status=exited", "--format", "{{.Names}}")
    assert "cli-ps-done" in exited.stdout.splitlines()
    assert "cli-ps-up" not in exited.stdout.splitlines()
    latest = daemon.ketch("ps", "-l", "-q")
    assert len(latest.stdout.splitlines()) == 1
    as_json = daemon.ketch("ps", "--format", "json", "-f", "name=cli-ps-up")
    assert json.loads(as_json.stdout.splitlines()[0])["Names"] == "cli-ps-up"
    table = daemon.ketch("ps", "--format", "table {{.Names}}\\t{{.Image}}", "-f", "name=cli-ps-up")
    assert table.stdout.splitlines() == ["NAMES       IMAGE", "cli-ps-up   busybox"]


def test_images_format(daemon: KetchDaemon) -> None:
    daemon.ketch("pull", "-q", "busybox")
    result = daemon.ketch("images", "--format", "{{.Repository}}:{{.Tag}} {{len .ID}}", "busybox")
    assert result.stdout.splitlines() == ["busybox:latest 12"], result.stderr


def test_logs_tail_and_streams(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-logs")
    script = "for i in 1 2 3; do echo out$i; done; echo err >&2"
    daemon.ketch("run", "--name", "cli-logs", "busybox", "sh", "-c", script)
    result = daemon.ketch("logs", "--tail", "2", "cli-logs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "out3"
    full = daemon.ketch("logs", "-t", "cli-logs")
    assert full.stderr.split(" ", 1)[1] == "err\n"
    assert full.stdout.count("out") == 3


def test_run_flags_reach_the_process(daemon: KetchDaemon, names: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("FROM_FILE=yes\n")
    result = daemon.ketch(
        "run", "--rm", "-w", "/tmp", "-u", "1000:1000", "--env-file", str(env_file),
        "--entrypoint", "sh", "busybox", "-c", 'echo "$(pwd) $(id -u) $FROM_FILE"',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/tmp 1000 yes\n"


def test_run_bad_env_file_creates_nothing(daemon: KetchDaemon, tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("BAD NAME=1\n")
    before = daemon.ketch("ps", "-aq").stdout
    result = daemon.ketch("run", "--env-file", str(env_file), "busybox", "true")
    assert result.returncode == 125
    assert f"invalid env file {env_file}, line 1" in result.stderr
    assert daemon.ketch("ps", "-aq").stdout == before


def test_run_rm_with_restart_rejected(daemon: KetchDaemon) -> None:
    before = daemon.ketch("ps", "-aq").stdout
    result = daemon.ketch("run", "--rm", "--restart", "always", "busybox", "true")
    assert result.returncode == 125
    assert "Conflicting options: --restart and --rm" in result.stderr
    assert daemon.ketch("ps", "-aq").stdout == before


def test_run_memory_limit_in_inspect(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-memory")
    daemon.ketch("create", "--name", "cli-memory", "-m", "64m", "--pids-limit", "50", "busybox")
    template = "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"
    result = daemon.ketch("inspect", "-f", template, "cli-memory")
    assert result.stdout == f"{64 * 1024 * 1024} 50\n", result.stderr


def test_version_and_info_format(daemon: KetchDaemon) -> None:
    version = daemon.ketch("version", "-f", "{{.Server.ApiVersion}}")
    assert version.stdout.strip().startswith("1."), version.stderr
    info = daemon.ketch("info", "-f", "{{.OSType}}")
    assert info.stdout == "linux\n", info.stderr


def test_rm_force_running(daemon: KetchDaemon) -> None:
    daemon.ketch("run", "-d", "--name", "cli-rm-force", "busybox", "sleep", "100")
    result = daemon.ketch("rm", "-f", "cli-rm-force")
    assert result.stdout == "cli-rm-force\n", result.stderr
    missing = daemon.ketch("inspect", "cli-rm-force")
    assert missing.returncode == 1


def test_restart_pause_unpause(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-pause")
    daemon.ketch("run", "-d", "--name", "cli-pause", "busybox", "sleep", "100")
    paused = daemon.ketch("pause", "cli-pause")
    assert paused.stdout == "cli-pause\n", paused.stderr
    wait_for_state(daemon, "cli-pause", "paused")
    assert daemon.ketch("unpause", "cli-pause").stdout == "cli-pause\n"
    wait_for_state(daemon, "cli-pause", "running")
    before = daemon.ketch("inspect", "-f", "{{.State.StartedAt}}", "cli-pause").stdout
    restarted = daemon.ketch("restart", "-t", "1", "cli-pause")
    assert restarted.stdout == "cli-pause\n", restarted.stderr
    wait_for_state(daemon, "cli-pause", "running")
    after = daemon.ketch("inspect", "-f", "{{.State.StartedAt}}", "cli-pause").stdout
    assert after != before


def test_rename_then_inspect(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-renamed")
    daemon.ketch("create", "--name", "cli-to-rename", "busybox")
    result = daemon.ketch("rename", "cli-to-rename", "cli-renamed")
    assert result.returncode == 0, result.stderr
    assert daemon.ketch("inspect", "-f", "{{.Name}}", "cli-renamed").stdout == "/cli-renamed\n"


def test_update_memory(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-update")
    daemon.ketch("run", "-d", "--name", "cli-update", "-m", "64m", "busybox", "sleep", "100")
    result = daemon.ketch("update", "-m", "32m", "cli-update")
    assert result.stdout == "cli-update\n", result.stderr
    memory = daemon.ketch("inspect", "-f", "{{.HostConfig.Memory}}", "cli-update").stdout
    assert memory == f"{32 * 1024 * 1024}\n"


def test_events_since_until(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-events")
    start = time.time()
    daemon.ketch("run", "--name", "cli-events", "busybox", "true")
    result = daemon.ketch(
        "events", "--since", f"{start - 1:.3f}", "--until", f"{time.time() + 1:.3f}",
        "-f", "container=cli-events", "--format", "{{.Type}} {{.Action}}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "container start" in lines
    assert "container die" in lines


def test_system_df_and_container_prune(daemon: KetchDaemon) -> None:
    daemon.ketch("run", "--name", "cli-prune-me", "busybox", "true")
    usage = daemon.ketch("system", "df", "--format", "{{.Type}}")
    assert usage.stdout.splitlines()[:2] == ["Images", "Containers"], usage.stderr
    pruned = daemon.ketch("container", "prune", "-f")
    assert pruned.returncode == 0, pruned.stderr
    assert "Total reclaimed space:" in pruned.stdout
    assert daemon.ketch("inspect", "cli-prune-me").returncode == 1


def skip_without_route(result: object) -> None:
    """Skip a test whose command needs a route this ketchd does not serve yet."""
    if "page not found" in getattr(result, "stderr", ""):
        pytest.skip("waits for the engine: ketchd does not serve this route yet")


def test_exec_output_and_exit_code(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-exec")
    daemon.ketch("run", "-d", "--name", "cli-exec", "busybox", "sleep", "100")
    wait_for_state(daemon, "cli-exec", "running")
    result = daemon.ketch(
        "exec", "-e", "X=1", "-w", "/tmp", "cli-exec", "sh", "-c", 'echo "$X $(pwd)"; exit 4'
    )
    skip_without_route(result)
    assert result.returncode == 4, result.stderr
    assert result.stdout == "1 /tmp\n"


def test_run_interactive_tty(daemon: KetchDaemon, names: list[str]) -> None:
    import os
    import pty
    import select

    names.append("cli-tty")
    probe = daemon.ketch("create", "--name", "cli-tty", "-it", "busybox", "sh")
    if "Tty" in probe.stderr:
        pytest.skip("waits for the engine: ketchd does not support Tty yet")
    daemon.ketch("rm", "-f", "cli-tty")
    pid, fd = pty.fork()
    if pid == 0:
        argv = [str(VENV_BIN / "ketch"), "-H", daemon.host, "run", "-it", "--name", "cli-tty"]
        os.execv(argv[0], [*argv, "busybox", "sh"])
    output = b""
    try:
        os.write(fd, b"echo $((6*7)); exit 3\r")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                output += data
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, output
    assert b"42" in output


def test_logs_follow_ends_with_container(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-follow")
    script = "echo first; sleep 1; echo second"
    daemon.ketch("run", "-d", "--name", "cli-follow", "busybox", "sh", "-c", script)
    result = daemon.ketch("logs", "-f", "cli-follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\nsecond\n"


def test_tag_push_rmi_pull(daemon: KetchDaemon) -> None:
    daemon.ketch("pull", "-q", "busybox")
    target = f"{daemon.registry_address}/cli/box:v1"
    tagged = daemon.ketch("tag", "busybox", target)
    skip_without_route(tagged)
    assert tagged.returncode == 0, tagged.stderr
    pushed = daemon.ketch("push", target)
    skip_without_route(pushed)
    assert pushed.returncode == 0, pushed.stderr
    # The output ends with the digest line, and no blank line follows it.
    assert pushed.stdout.splitlines()[-1].startswith("v1: digest: sha256:"), pushed.stdout
    assert not pushed.stdout.endswith("\n\n"), pushed.stdout
    removed = daemon.ketch("rmi", target)
    skip_without_route(removed)
    assert f"Untagged: {target}" in removed.stdout.splitlines(), removed.stderr
    pulled = daemon.ketch("pull", "-q", target)
    assert pulled.stdout == f"{target}\n", pulled.stderr


def test_pull_missing_tag_output(daemon: KetchDaemon) -> None:
    reference = f"{daemon.registry_address}/cli/nosuchimage"
    result = daemon.ketch("pull", reference)
    assert result.returncode == 1
    assert result.stdout == "Using default tag: latest\n"
    assert result.stderr == (
        f"Error response from daemon: manifest for {reference}:latest not found: "
        "manifest unknown: manifest unknown\n"
    )


def test_top_and_stats(daemon: KetchDaemon, names: list[str]) -> None:
    names.append("cli-top")
    daemon.ketch("run", "-d", "--name", "cli-top", "busybox", "sleep", "100")
    wait_for_state(daemon, "cli-top", "running")
    top = daemon.ketch("top", "cli-top")
    skip_without_route(top)
    assert "sleep 100" in top.stdout, top.stderr
    stats = daemon.ketch("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "cli-top")
    skip_without_route(stats)
    assert stats.stdout == "cli-top 1\n", stats.stderr


def test_cp_diff_export_commit(daemon: KetchDaemon, names: list[str], tmp_path: Path) -> None:
    names.append("cli-files")
    daemon.ketch("run", "--name", "cli-files", "busybox", "sh", "-c", "echo made > /tmp/made")
    copied = daemon.ketch("cp", "cli-files:/tmp/made", str(tmp_path / "made"))
    skip_without_route(copied)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "made").read_text() == "made\n"
    source = tmp_path / "in.txt"
    source.write_text("in\n")
    put = daemon.ketch("cp", str(source), "cli-files:/tmp/")
    assert put.returncode == 0, put.stderr
    changes = daemon.ketch("diff", "cli-files")
    skip_without_route(changes)
    assert "A /tmp/made" in changes.stdout.splitlines(), changes.stderr
    exported = daemon.ketch("export", "-o", str(tmp_path / "fs.tar"), "cli-files")
    skip_without_route(exported)
    assert exported.returncode == 0, exported.stderr
    committed = daemon.ketch("commit", "cli-files", "cli/committed:v1")
    skip_without_route(committed)
    assert committed.stdout.startswith("sha256:"), committed.stderr
    result = daemon.ketch("run", "--rm", "cli/committed:v1", "cat", "/tmp/made", "/tmp/in.txt")
    assert result.stdout == "made\nin\n", result.stderr


def test_save_load_history(daemon: KetchDaemon, tmp_path: Path) -> None:
    daemon.ketch("pull", "-q", "busybox")
    history = daemon.ketch("history", "--format", "{{.Size}}", "busybox")
    skip_without_route(history)
    assert history.returncode == 0, history.stderr
    archive = tmp_path / "busybox.tar"
    saved = daemon.ketch("save", "-o", str(archive), "busybox")
    skip_without_route(saved)
    assert saved.returncode == 0, saved.stderr
    loaded = daemon.ketch("load", "-i", str(archive))
    skip_without_route(loaded)
    assert "busybox:latest" in loaded.stdout, loaded.stderr
