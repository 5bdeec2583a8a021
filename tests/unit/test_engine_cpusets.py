"""Cpuset checks at create: CPUs and memory nodes outside ketchd's cgroup are rejected."""

from __future__ import annotations

import os

import pytest

from ketch.engine.cpusets import available_list, parse_cpu_list
from ketch.engine.options import parse_create_body
from ketch.errors import InvalidArgument


def test_parse_cpu_list_ranges() -> None:
    assert parse_cpu_list("0-2,4") == {0, 1, 2, 4}


def test_parse_cpu_list_single() -> None:
    assert parse_cpu_list("7\n") == {7}


def test_parse_cpu_list_reversed_range() -> None:
    with pytest.raises(ValueError, match="end is below the start"):
        parse_cpu_list("3-1")


def test_available_cpus_include_affinity() -> None:
    # ketchd's cgroup cpuset contains the CPUs this process may run on.
    assert os.sched_getaffinity(0) <= parse_cpu_list(available_list("cpus"))


def test_create_rejects_missing_cpu() -> None:
    missing = max(parse_cpu_list(available_list("cpus"))) + 1
    available = available_list("cpus")
    expected = f"Requested CPUs are not available - requested {missing}, available: {available}"
    with pytest.raises(InvalidArgument) as caught:
        parse_create_body({"Image": "busybox", "HostConfig": {"CpusetCpus": str(missing)}})
    assert str(caught.value) == expected


def test_create_rejects_missing_node() -> None:
    missing = max(parse_cpu_list(available_list("mems"))) + 1
    with pytest.raises(InvalidArgument, match="Requested memory nodes are not available"):
        parse_create_body({"Image": "busybox", "HostConfig": {"CpusetMems": str(missing)}})


def test_create_accepts_available_cpus() -> None:
    available = available_list("cpus")
    options = parse_create_body({"Image": "busybox", "HostConfig": {"CpusetCpus": available}})
    assert options.cpuset_cpus == available


def test_create_rejects_reversed_cpu_range() -> None:
    with pytest.raises(InvalidArgument, match="end is below the start"):
        parse_create_body({"Image": "busybox", "HostConfig": {"CpusetCpus": "3-1"}})


def test_create_rejects_huge_cpu_range() -> None:
    # The range is compared by its bounds, so the check builds no set of a billion numbers.
    top = max(parse_cpu_list(available_list("cpus")))
    requested = f"0-{top + 1_000_000_000}"
    with pytest.raises(InvalidArgument, match="Requested CPUs are not available"):
        parse_create_body({"Image": "busybox", "HostConfig": {"CpusetCpus": requested}})
