"""The network counters of a stats sample, from a /proc/net/dev text."""

from __future__ import annotations

from ketch.engine.stats import parse_net_dev

NET_DEV = "\n".join(
    [
        "Inter-|   Receive                          |  Transmit",
        " face |bytes packets errs drop fifo frame compressed multicast|bytes packets ...",
        "    lo: 120 2 0 0 0 0 0 0 120 2 0 0 0 0 0 0",
        "  eth0: 4432 40 1 2 0 0 0 0 2543 30 3 4 0 0 0 0",
    ]
)


def test_net_dev_skips_loopback() -> None:
    assert list(parse_net_dev(NET_DEV)) == ["eth0"]


def test_net_dev_counters() -> None:
    assert parse_net_dev(NET_DEV)["eth0"] == {
        "rx_bytes": 4432,
        "rx_packets": 40,
        "rx_errors": 1,
        "rx_dropped": 2,
        "tx_bytes": 2543,
        "tx_packets": 30,
        "tx_errors": 3,
        "tx_dropped": 4,
    }


def test_net_dev_loopback_only() -> None:
    assert parse_net_dev("\n".join(NET_DEV.splitlines()[:3])) == {}
