"""How long create + start + wait of `true` takes from a warm process (printed, not
asserted: the number depends on the machine; see it with ``pytest -s``)."""

from __future__ import annotations

import os
import statistics
import time

pytest_plugins = ["support.rootfs"]

RUNS = 20


def test_create_start_wait_true(runner):
    null = os.open("/dev/null", os.O_RDWR)
    durations = []
    try:
        for _ in range(RUNS + 2):
            container_id = runner.new_id()
            bundle = runner.bundle(container_id, ["true"])
            runner.ids.append(container_id)
            started = time.perf_counter()
            pid = runner.runtime.create(container_id, bundle, stdio=(null, null, null))
            runner.runtime.start(container_id)
            status = runner.wait(pid)
            durations.append((time.perf_counter() - started) * 1000)
            runner.runtime.delete(container_id)
            assert status == 0
    finally:
        os.close(null)
    # The first two runs warm the page cache and the cgroup code paths.
    median = statistics.median(durations[2:])
    print(f"\ncreate + start + wait of true: median {median:.1f} ms over {RUNS} runs")
