"""Registry credentials on pulls: the X-Registry-Auth header that ``ketch pull``, ``run`` and
``create`` send, and the pull route that passes it to the engine."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.cli import login
from ketch.cli.errors import UsageError
from ketch.images.auth import Credentials
from support.cli import run_ketch
from support.fake_docker import FakeDocker, Reply, serve_fake_docker
from support.fake_engine import ServedEngine, serve_fake_engine
from support.raw_http import request

PULL = "/images/create?fromImage=127.0.0.1:5000/private/app&tag=v1"
REFERENCE = "127.0.0.1:5000/private/app:v1"


def encode_auth(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def write_config(directory: Path, auths: dict[str, dict[str, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"auths": auths}))


def basic_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def decoded_header(headers: dict[str, str]) -> dict[str, str]:
    return json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"]))


@pytest.fixture
def directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ketch-auth-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(directory: Path) -> Iterator[ServedEngine]:
    with serve_fake_engine(directory / "api.sock") as served:
        served.engine.pull_results[REFERENCE] = ([{"status": "Pulled"}], None)
        yield served


@pytest.fixture
def fake(directory: Path) -> Iterator[FakeDocker]:
    with serve_fake_docker(directory / "docker.sock") as served:
        yield served


@pytest.fixture
def config_dir(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(login.CONFIG_VARIABLE, str(directory / "config"))
    return directory / "config"


# The pull route


def test_pull_route_passes_credentials(served: ServedEngine) -> None:
    header = encode_auth(
        {"username": "alice", "password": "s3cret", "serveraddress": "127.0.0.1:5000"}
    )
    reply = request(served.socket_path, "POST", PULL, headers={"X-Registry-Auth": header})
    assert reply.status == 200
    assert served.engine.pull_auths == [Credentials("alice", "s3cret")]


@pytest.mark.parametrize("header", [None, "", encode_auth({}), "e30="])
def test_pull_route_without_credentials(served: ServedEngine, header: str | None) -> None:
    headers = {"X-Registry-Auth": header} if header is not None else None
    reply = request(served.socket_path, "POST", PULL, headers=headers)
    assert reply.status == 200
    assert served.engine.pull_auths == [None]


@pytest.mark.parametrize("header", ["not base64!", encode_auth(["alice", "s3cret"])])
def test_pull_route_malformed_header_is_400(served: ServedEngine, header: str) -> None:
    reply = request(served.socket_path, "POST", PULL, headers={"X-Registry-Auth": header})
    assert reply.status == 400
    assert "invalid X-Registry-Auth header" in reply.json()["message"]
    assert served.engine.calls == []


# The CLI's lookup in its config file


def test_auth_header_exact_key(config_dir: Path) -> None:
    write_config(config_dir, {"127.0.0.1:5000": basic_entry("alice", "s3cret")})
    document = decoded_header(login.registry_auth_header("127.0.0.1:5000/private/app"))
    assert document["username"] == "alice"
    assert document["password"] == "s3cret"
    assert document["serveraddress"] == "127.0.0.1:5000"


def test_auth_header_url_key(config_dir: Path) -> None:
    write_config(config_dir, {"http://127.0.0.1:5000/v2/": basic_entry("alice", "s3cret")})
    document = decoded_header(login.registry_auth_header("127.0.0.1:5000/private/app"))
    assert document["username"] == "alice"


def test_auth_header_prefers_exact_key(config_dir: Path) -> None:
    write_config(
        config_dir,
        {
            "http://127.0.0.1:5000": basic_entry("old", "x"),
            "127.0.0.1:5000": basic_entry("alice", "s3cret"),
        },
    )
    document = decoded_header(login.registry_auth_header("127.0.0.1:5000/private/app"))
    assert document["username"] == "alice"


@pytest.mark.parametrize("reference", ["busybox", "me/app", "docker.io/me/app"])
def test_auth_header_docker_hub(config_dir: Path, reference: str) -> None:
    write_config(config_dir, {"docker.io": basic_entry("hubuser", "pw")})
    assert decoded_header(login.registry_auth_header(reference))["username"] == "hubuser"


def test_auth_header_other_registry(config_dir: Path) -> None:
    write_config(config_dir, {"127.0.0.1:5000": basic_entry("alice", "s3cret")})
    assert login.registry_auth_header("127.0.0.1:5001/private/app") == {}
    assert login.registry_auth_header("busybox") == {}


def test_auth_header_without_config(config_dir: Path) -> None:
    assert login.registry_auth_header("127.0.0.1:5000/private/app") == {}


def test_auth_header_invalid_entry(config_dir: Path) -> None:
    write_config(config_dir, {"127.0.0.1:5000": {"auth": "no colon here"}})
    with pytest.raises(UsageError, match="invalid auth entry for 127.0.0.1:5000"):
        login.registry_auth_header("127.0.0.1:5000/private/app")


# The commands that pull


def test_pull_sends_auth_header(fake: FakeDocker, directory: Path) -> None:
    write_config(directory / "config", {"127.0.0.1:5000": basic_entry("alice", "s3cret")})
    fake.reply("POST", "/images/create", Reply(200, lines=[{"status": "Pulled"}]))
    env = {login.CONFIG_VARIABLE: str(directory / "config")}
    result = run_ketch("pull", "127.0.0.1:5000/private/app:v1", host=fake.host, env=env)
    assert result.returncode == 0, result.stderr
    sent = fake.find("POST", "/images/create")[0].headers["x-registry-auth"]
    assert json.loads(base64.urlsafe_b64decode(sent))["password"] == "s3cret"


@pytest.mark.parametrize("verb", ["run", "create"])
def test_missing_image_pull_sends_auth_header(fake: FakeDocker, directory: Path, verb: str) -> None:
    write_config(directory / "config", {"127.0.0.1:5000": basic_entry("alice", "s3cret")})
    missing = Reply(404, {"message": "No such image: 127.0.0.1:5000/private/app:v1"})
    fake.reply("POST", "/containers/create", missing)
    fake.reply("POST", "/images/create", Reply(200, lines=[{"status": "Pulled"}]))
    env = {login.CONFIG_VARIABLE: str(directory / "config")}
    run_ketch(verb, "127.0.0.1:5000/private/app:v1", host=fake.host, env=env)
    pulls = fake.find("POST", "/images/create")
    assert len(pulls) == 1
    sent = pulls[0].headers["x-registry-auth"]
    assert json.loads(base64.urlsafe_b64decode(sent))["username"] == "alice"


def test_login_replaces_other_spelling(fake: FakeDocker, directory: Path) -> None:
    write_config(directory / "config", {"http://127.0.0.1:5000": basic_entry("old", "x")})
    fake.reply("POST", "/auth", Reply(200, {"Status": "Login Succeeded"}))
    env = {login.CONFIG_VARIABLE: str(directory / "config")}
    result = run_ketch(
        "login", "-u", "alice", "--password-stdin", "127.0.0.1:5000",
        input="s3cret\n", host=fake.host, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    auths = json.loads((directory / "config" / "config.json").read_text())["auths"]
    assert list(auths) == ["127.0.0.1:5000"]


def test_logout_removes_every_spelling(fake: FakeDocker, directory: Path) -> None:
    write_config(
        directory / "config",
        {
            "http://127.0.0.1:5000": basic_entry("old", "x"),
            "127.0.0.1:5000": basic_entry("alice", "s3cret"),
            "127.0.0.1:5001": basic_entry("bob", "y"),
        },
    )
    env = {login.CONFIG_VARIABLE: str(directory / "config")}
    result = run_ketch("logout", "127.0.0.1:5000", host=fake.host, env=env)
    assert result.stdout == "Removing login credentials for 127.0.0.1:5000\n"
    auths = json.loads((directory / "config" / "config.json").read_text())["auths"]
    assert list(auths) == ["127.0.0.1:5001"]
