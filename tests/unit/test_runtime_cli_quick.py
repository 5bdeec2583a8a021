"""ketch-runc's hand parser against its argparse parser: same attributes, or a fallback."""

from __future__ import annotations

import pytest

from ketch.runtime import cli, cli_quick

ROOT = "/run/ketch-runc"

PLAIN_CALLS = [
    ["start", "c1"],
    ["state", "c1"],
    ["--root", "/tmp/r", "state", "c1"],
    ["--root=/tmp/r", "--log", "/tmp/log", "--log-format", "json", "start", "c1"],
    ["--debug", "--systemd-cgroup", "--rootless=false", "delete", "c1"],
    ["kill", "c1"],
    ["kill", "c1", "KILL"],
    ["kill", "--all", "c1", "9"],
    ["kill", "c1", "SIGUSR1", "-a"],
    ["delete", "--force", "c1"],
    ["delete", "c1", "-f"],
    ["create", "c1"],
    ["create", "--bundle", "/b", "--pid-file", "/p", "c1"],
    ["create", "-b", "/b", "--pid-file=/p", "--console-socket", "/s", "c1"],
    ["create", "c1", "--bundle=/b", "--no-pivot", "--no-new-keyring", "--preserve-fds", "2"],
]

FALLBACK_CALLS = [
    [],
    ["--version"],
    ["--help"],
    ["start", "--help"],
    ["create", "--bundle", "c1"],
    ["create", "-b=/b", "c1"],
    ["create", "--bundl", "/b", "c1"],
    ["create", "--preserve-fds", "two", "c1"],
    ["create", "--no-pivot=1", "c1"],
    ["create", "c1", "c2"],
    ["exec", "c1", "true"],
    ["state"],
    ["state", "c1", "c2"],
    ["start", "--", "c1"],
    ["kill", "c1", "-9"],
    ["kill", "-af", "c1"],
    ["--roo", "/tmp/r", "state", "c1"],
    ["--root"],
    ["--root", "--debug", "state", "c1"],
    ["--log-format", "xml", "state", "c1"],
    ["--debug=1", "state", "c1"],
    ["--unknown", "state", "c1"],
]


@pytest.fixture(autouse=True)
def no_root_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETCH_RUNC_ROOT", raising=False)


@pytest.mark.parametrize("argv", PLAIN_CALLS, ids=" ".join)
def test_quick_parse_matches_argparse(argv: list[str]) -> None:
    quick = cli_quick.parse(argv, ROOT)
    expected = vars(cli._parser().parse_args(argv))
    expected.pop("handler")
    assert quick is not None
    assert vars(quick) == expected


@pytest.mark.parametrize("argv", FALLBACK_CALLS, ids=" ".join)
def test_quick_parse_falls_back(argv: list[str]) -> None:
    assert cli_quick.parse(argv, ROOT) is None


def test_quick_parse_root_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_RUNC_ROOT", "/tmp/from-env")
    quick = cli_quick.parse(["state", "c1"], ROOT)
    assert quick is not None
    assert quick.root == "/tmp/from-env"


def test_quick_parse_split_positionals() -> None:
    assert cli_quick.parse(["kill", "c1", "-a", "SIGUSR1"], ROOT) is None
