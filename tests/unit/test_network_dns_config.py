"""ketchd's ``dns`` setting, as a flag and in daemon.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.engine.config import load_config
from ketch.errors import InvalidArgument


def config_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_dns_default_empty(tmp_path: Path) -> None:
    config = load_config(["--config-file", config_file(tmp_path, {})])
    assert config.dns == []


def test_dns_flags_in_order(tmp_path: Path) -> None:
    config = load_config(
        ["--config-file", config_file(tmp_path, {}), "--dns", "10.0.0.2", "--dns", "::1"]
    )
    assert config.dns == ["10.0.0.2", "::1"]


def test_dns_from_file(tmp_path: Path) -> None:
    config = load_config(["--config-file", config_file(tmp_path, {"dns": ["127.0.0.1"]})])
    assert config.dns == ["127.0.0.1"]


def test_dns_not_address_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="resolver.test"):
        load_config(["--config-file", config_file(tmp_path, {}), "--dns", "resolver.test"])


def test_dns_file_not_list_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="'dns'"):
        load_config(["--config-file", config_file(tmp_path, {"dns": "10.0.0.2"})])


def test_dns_search_and_opts_flags(tmp_path: Path) -> None:
    config = load_config(
        [
            "--config-file", config_file(tmp_path, {}),
            "--dns-search", "corp.test", "--dns-opt", "ndots:2", "--dns-opt", "timeout:1",
        ]
    )  # fmt: skip
    assert config.dns_search == ["corp.test"]
    assert config.dns_options == ["ndots:2", "timeout:1"]


def test_dns_search_and_opts_from_file(tmp_path: Path) -> None:
    values = {"dns-search": ["corp.test"], "dns-opts": ["ndots:2"]}
    config = load_config(["--config-file", config_file(tmp_path, values)])
    assert config.dns_search == ["corp.test"]
    assert config.dns_options == ["ndots:2"]


def test_dns_search_with_space_rejected(tmp_path: Path) -> None:
    values = {"dns-search": ["corp.test lab.test"]}
    with pytest.raises(InvalidArgument, match="dns-search"):
        load_config(["--config-file", config_file(tmp_path, values)])
