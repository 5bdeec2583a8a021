"""The default ``ketch ps`` table, built without the template engine, matches the table
that the template ``DEFAULT_TABLE`` renders."""

from __future__ import annotations

import pytest

from ketch.cli import ps
from ketch.cli.formatter import render

NOW = 1_700_000_000.0

CONTAINERS = [
    {
        "Id": "a" * 64,
        "Image": "busybox",
        "Command": "sh -c 'echo a long command line that gets truncated'",
        "Created": NOW - 90,
        "Status": "Up 1 minute",
        "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp", "IP": "0.0.0.0"}],
        "Names": ["/web"],
        "SizeRw": 12,
        "SizeRootFs": 4_000_000,
    },
    {
        "Id": "b" * 64,
        "Image": "sha256:" + "c" * 64,
        "Command": "true",
        "Created": NOW - 7200,
        "Status": "Exited (0) 2 hours ago",
        "Ports": [],
        "Names": ["/a-much-longer-container-name"],
    },
]


def template_table(rows: list[ps.ContainerRow], size: bool) -> str:
    default = ps.DEFAULT_TABLE + ("\t{{.Size}}" if size else "")
    return render("", default, ps.HeaderRow(ps.HEADERS), rows)


@pytest.mark.parametrize("size", [False, True])
@pytest.mark.parametrize("truncated", [False, True])
def test_default_table_matches_template(size: bool, truncated: bool) -> None:
    rows = [ps.ContainerRow(container, NOW, truncated) for container in CONTAINERS]
    assert ps.default_table(rows, size) == template_table(rows, size)


def test_default_table_empty() -> None:
    assert ps.default_table([], False) == template_table([], False)


def test_default_fields_follow_template() -> None:
    fields = "\t".join("{{." + name + "}}" for name in ps.DEFAULT_FIELDS)
    assert fields == ps.DEFAULT_TABLE
