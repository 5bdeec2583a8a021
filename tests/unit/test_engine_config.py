"""ketchd's flags and daemon.json: merging, unknown keys, bad JSON, conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.engine.config import DEFAULT_HOST, load_config
from ketch.errors import InvalidArgument


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.json"
    path.write_text(text)
    return path


def test_config_defaults_without_file(tmp_path: Path) -> None:
    config = load_config(["--config-file", str(write(tmp_path, "{}"))])
    assert config.data_root == Path("/var/lib/ketch")
    assert config.exec_root == Path("/run/ketch")
    assert config.hosts == [DEFAULT_HOST]
    assert config.debug is False


def test_config_flags(tmp_path: Path) -> None:
    config = load_config(
        [
            "--config-file", str(write(tmp_path, "{}")),
            "--data-root", "/tmp/d", "--exec-root", "/tmp/e", "-H", "unix:///tmp/e/s.sock",
            "--registry-mirror", "http://127.0.0.1:5000/", "--insecure-registry", "r:5000", "-D",
        ]
    )  # fmt: skip
    assert config.data_root == Path("/tmp/d")
    assert config.socket_paths() == [Path("/tmp/e/s.sock")]
    assert config.registry_mirrors == ["http://127.0.0.1:5000"]
    assert config.insecure_registries == ["r:5000"]
    assert config.debug is True


def test_config_file_keys(tmp_path: Path) -> None:
    values = {
        "data-root": "/srv/ketch",
        "exec-root": "/run/k",
        "hosts": ["unix:///run/k/a.sock"],
        "registry-mirrors": ["https://mirror.example"],
        "insecure-registries": ["10.0.0.1:5000"],
        "debug": True,
    }
    config = load_config(["--config-file", str(write(tmp_path, json.dumps(values)))])
    assert config.data_root == Path("/srv/ketch")
    assert config.exec_root == Path("/run/k")
    assert config.hosts == ["unix:///run/k/a.sock"]
    assert config.registry_mirrors == ["https://mirror.example"]
    assert config.debug is True


def test_config_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, '{"storage-driver": "vfs"}')
    with pytest.raises(InvalidArgument, match="unknown key 'storage-driver'"):
        load_config(["--config-file", str(path)])


def test_config_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "debug": true,\n}\n')
    with pytest.raises(InvalidArgument, match=rf"{path} at line 3"):
        load_config(["--config-file", str(path)])


def test_config_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, '{"registry-mirrors": "http://x"}')
    with pytest.raises(InvalidArgument, match="'registry-mirrors'.*a list of strings"):
        load_config(["--config-file", str(path)])


def test_config_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_config(["--config-file", str(tmp_path / "absent.json")])


def test_config_flag_and_file_conflict(tmp_path: Path) -> None:
    path = write(tmp_path, '{"data-root": "/a"}')
    with pytest.raises(InvalidArgument, match="both as a flag and in the configuration file"):
        load_config(["--config-file", str(path), "--data-root", "/b"])


def test_config_tcp_host_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "{}")
    with pytest.raises(InvalidArgument, match="invalid host 'tcp://0.0.0.0:2375'"):
        load_config(["--config-file", str(path), "-H", "tcp://0.0.0.0:2375"])


def test_config_mirror_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, '{"registry-mirrors": ["127.0.0.1:5000"]}')
    with pytest.raises(InvalidArgument, match="invalid registry mirror '127.0.0.1:5000'"):
        load_config(["--config-file", str(path)])


def test_config_tcp_with_tls_files(tmp_path: Path) -> None:
    path = write(tmp_path, "{}")
    config = load_config(
        ["--config-file", str(path), "-H", "tcp://127.0.0.1:2376", "--tlsverify",
         "--tlscacert", "ca.pem", "--tlscert", "cert.pem", "--tlskey", "key.pem"]
    )  # fmt: skip
    assert config.tcp_addresses() == [("127.0.0.1", 2376)]


def test_config_tlsverify_needs_files(tmp_path: Path) -> None:
    path = write(tmp_path, "{}")
    with pytest.raises(InvalidArgument, match="--tlscacert"):
        load_config(["--config-file", str(path), "-H", "tcp://127.0.0.1:2376", "--tlsverify"])


def test_config_insecure_tcp_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "{}")
    config = load_config(
        ["--config-file", str(path), "-H", "tcp://127.0.0.1:2375", "--insecure-tcp"]
    )
    assert config.insecure_tcp


def test_config_default_ulimits_clamped(tmp_path: Path) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = {"nofile": {"Name": "nofile", "Soft": 10**9, "Hard": 10**9}}
    path = write(tmp_path, json.dumps({"default-ulimits": limits}))
    config = load_config(["--config-file", str(path)])
    expected = hard if hard != resource.RLIM_INFINITY else 10**9
    assert config.default_ulimits == [{"Name": "nofile", "Soft": expected, "Hard": expected}]
