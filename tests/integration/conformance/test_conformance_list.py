"""Conformance of ``list``: runc's table (columns laid out by Go's text/tabwriter with a
minimum width of 12 and a padding of 3) and its ``--quiet`` and JSON forms."""

from __future__ import annotations

import json
import re

LONG_SLEEP = ["sleep", "300"]
HEADER = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
MIN_WIDTH = 12
PADDING = 3
# RFC 3339 in UTC with the fraction's trailing zeros dropped, as Go's RFC3339Nano prints.
CREATED_PATTERN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z")


def created_and_running(oci) -> tuple[str, str]:
    first, result = oci.create(LONG_SLEEP)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    second, result = oci.create(LONG_SLEEP)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    result = oci("start", second)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    return first, second


def column_starts(rows: list[list[str]]) -> list[int]:
    """Return where each column starts when laid out as runc lays them out."""
    starts = [0]
    for column in range(len(HEADER) - 1):
        widest = max(len(row[column]) for row in rows)
        starts.append(starts[-1] + max(MIN_WIDTH, widest + PADDING))
    return starts


def test_list_table_layout(oci):
    first, second = created_and_running(oci)
    result = oci("list")
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines]
    assert rows[0] == HEADER

    starts = column_starts(rows)
    for line, row in zip(lines, rows, strict=True):
        expected = "".join(
            cell.ljust(end - start)
            for cell, start, end in zip(row[:-1], starts[:-1], starts[1:], strict=True)
        )
        assert line == expected + row[-1], f"{oci.name}: {line!r}"


def test_list_table_fields(oci):
    first, second = created_and_running(oci)
    rows = {row[0]: row for row in (line.split() for line in oci("list").stdout.splitlines())}

    for container_id, status in ((first, "created"), (second, "running")):
        row = rows[container_id]
        assert row[1] == str(oci.state(container_id)["pid"])
        assert row[2] == status
        assert row[3] == str(oci.workdir / "bundles" / container_id)
        assert CREATED_PATTERN.fullmatch(row[4]), f"{oci.name}: {row[4]!r}"
        assert row[5] == "root"


def test_list_quiet_ignores_format(oci):
    first, second = created_and_running(oci)
    result = oci("list", "--quiet", "--format", "json")
    assert sorted(result.stdout.split()) == sorted([first, second])


def test_list_json_owner(oci):
    first, _ = created_and_running(oci)
    listed = {entry["id"]: entry for entry in json.loads(oci("list", "--format", "json").stdout)}
    assert listed[first]["owner"] == "root"
    assert listed[first]["status"] == "created"
