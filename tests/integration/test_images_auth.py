"""Logging in to real registries: docker-registry with htpasswd Basic auth and one behind a
token service that the test runs on loopback.

The image store is tested directly, then ``ketch login`` followed by pull, run and create
through a ketchd, with the Basic auth registry in the daemon's network namespace.
"""

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import Forbidden, NotFound
from ketch.images import ImageStore
from ketch.images.auth import Credentials
from ketch.images.endpoints import Endpoint
from ketch.images.registry import open_session, push_image
from support.daemon import VENV_BIN, KetchDaemon
from support.images import Dir, File, gzip_layer, image_config, image_store
from support.raw_http import request
from support.registry_auth import start_htpasswd_registry, start_token_registry

USER, PASSWORD = "alice", "s3cret-pass"
LAYER = gzip_layer({"etc/": Dir(), "etc/motd": File(b"private\n")})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    config = tmp_path / "docker-config" / "config.json"
    with image_store(tmp_path / "ketch", docker_config=config) as opened:
        yield opened


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[str]:
    with start_htpasswd_registry(tmp_path / "basic", USER, PASSWORD) as registry:
        seed(registry.address, "private/app")
        yield registry.address


def seed(address: str, repository: str) -> None:
    async def push() -> None:
        async with open_session() as session:
            endpoint = Endpoint(f"http://{address}", address)
            config = image_config([LAYER])
            credentials = Credentials(USER, PASSWORD)
            await push_image(
                session, endpoint, repository, "v1", config, [LAYER], credentials=credentials
            )

    asyncio.run(push())


def test_basic_login_stores_credentials(store: ImageStore, basic_registry: str) -> None:
    assert asyncio.run(store.login(basic_registry, USER, PASSWORD)) == "Login Succeeded"
    document = json.loads(store.credentials.path.read_text())
    assert list(document["auths"]) == [basic_registry]
    assert store.credentials.get(basic_registry) == Credentials(USER, PASSWORD)


def test_basic_login_file_mode(store: ImageStore, basic_registry: str) -> None:
    asyncio.run(store.login(basic_registry, USER, PASSWORD))
    assert os.stat(store.credentials.path).st_mode & 0o777 == 0o600


def test_basic_login_wrong_password(store: ImageStore, basic_registry: str) -> None:
    with pytest.raises(Forbidden, match=f"rejected the credentials of user {USER}"):
        asyncio.run(store.login(basic_registry, USER, "wrong"))
    assert not store.credentials.path.exists()


def test_basic_pull_without_login(store: ImageStore, basic_registry: str) -> None:
    with pytest.raises(Forbidden, match="requires a login"):
        asyncio.run(store.pull(f"{basic_registry}/private/app:v1"))


def test_basic_pull_after_login(store: ImageStore, basic_registry: str) -> None:
    asyncio.run(store.login(basic_registry, USER, PASSWORD))
    image = asyncio.run(store.pull(f"{basic_registry}/private/app:v1"))
    assert image.repo_tags == [f"{basic_registry}/private/app:v1"]


def test_logout_forgets_credentials(store: ImageStore, basic_registry: str) -> None:
    asyncio.run(store.login(basic_registry, USER, PASSWORD))
    assert store.logout(basic_registry) is True
    assert store.credentials.get(basic_registry) is None
    assert store.logout(basic_registry) is False


def test_token_login_and_pull(tmp_path: Path, store: ImageStore) -> None:
    with start_token_registry(tmp_path / "token", {USER: PASSWORD}) as (registry, service):
        seed(registry.address, "private/app")
        assert asyncio.run(store.login(registry.address, USER, PASSWORD)) == "Login Succeeded"
        service.requests.clear()
        image = asyncio.run(store.pull(f"{registry.address}/private/app:v1"))
    assert image.repo_tags == [f"{registry.address}/private/app:v1"]
    assert service.requests[0].account == USER
    assert service.requests[0].scopes == ["repository:private/app:pull"]


def test_token_anonymous_pull_denied(tmp_path: Path, store: ImageStore) -> None:
    with start_token_registry(tmp_path / "token", {USER: PASSWORD}) as (registry, service):
        seed(registry.address, "private/app")
        with pytest.raises(NotFound, match="pull access denied for"):
            asyncio.run(store.pull(f"{registry.address}/private/app:v1"))
    assert service.requests[-1].account is None


def test_token_login_wrong_password(tmp_path: Path, store: ImageStore) -> None:
    with start_token_registry(tmp_path / "token", {USER: PASSWORD}) as (registry, _):
        with pytest.raises(Forbidden, match="rejected the credentials of user alice"):
            asyncio.run(store.login(registry.address, USER, "wrong"))


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_cli_logout_reads_ketch_login(
    tmp_path: Path, store: ImageStore, basic_registry: str
) -> None:
    asyncio.run(store.login(basic_registry, USER, PASSWORD))
    result = subprocess.run(
        ["docker", "logout", basic_registry],
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == f"Removing login credentials for {basic_registry}"
    assert store.credentials.get(basic_registry) is None


def test_pull_with_request_credentials(store: ImageStore, basic_registry: str) -> None:
    credentials = Credentials(USER, PASSWORD)
    image = asyncio.run(store.pull(f"{basic_registry}/private/app:v1", auth=credentials))
    assert image.repo_tags == [f"{basic_registry}/private/app:v1"]
    assert not store.credentials.path.exists()


def test_push_with_request_credentials(store: ImageStore, basic_registry: str) -> None:
    credentials = Credentials(USER, PASSWORD)
    asyncio.run(store.pull(f"{basic_registry}/private/app:v1", auth=credentials))
    store.tag(f"{basic_registry}/private/app:v1", f"{basic_registry}/private/copy:v1")
    digest = asyncio.run(store.push(f"{basic_registry}/private/copy:v1", auth=credentials))
    assert digest.startswith("sha256:")


# ketch login, then pull, run and create through ketchd


@pytest.fixture(scope="module")
def daemon_registry(daemon: KetchDaemon) -> Iterator[str]:
    """A Basic auth registry beside the module's ketchd that contains ``private/bb:v1``.

    The daemon pushes a busybox image there, then removes it from its own images again.
    """
    directory = Path(tempfile.mkdtemp(prefix="ketch-auth-", dir="/tmp"))
    try:
        with start_htpasswd_registry(
            directory / "basic", USER, PASSWORD, netns=daemon.namespace.name
        ) as registry:
            seed_through_daemon(daemon, directory / "seed-config", registry.address)
            yield registry.address
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def seed_through_daemon(daemon: KetchDaemon, config: Path, address: str) -> None:
    image = f"{address}/private/bb:v1"
    assert ketch_user(daemon, config, "pull", "-q", "busybox").returncode == 0
    assert ketch_user(daemon, config, "tag", "busybox", image).returncode == 0
    login = ketch_user(daemon, config, "login", "-u", USER, "--password-stdin", address,
                       input=PASSWORD)  # fmt: skip
    assert login.returncode == 0, login.stderr
    pushed = ketch_user(daemon, config, "push", image)
    assert pushed.returncode == 0, pushed.stderr
    assert ketch_user(daemon, config, "rmi", image).returncode == 0


def ketch_user(
    daemon: KetchDaemon, config: Path, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ketch CLI against ``daemon`` with its credentials file in ``config``."""
    return subprocess.run(
        [str(VENV_BIN / "ketch"), "-H", daemon.host, *args],
        env={**os.environ, "KETCH_CONFIG": str(config)},
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def private_image(daemon: KetchDaemon, daemon_registry: str) -> Iterator[str]:
    """The private image's reference; the test's copy of it is removed afterwards."""
    image = f"{daemon_registry}/private/bb:v1"
    yield image
    daemon.ketch("rmi", "-f", image)


def login_user(daemon: KetchDaemon, config: Path, registry: str) -> None:
    result = ketch_user(daemon, config, "login", "-u", USER, "--password-stdin", registry,
                        input=PASSWORD + "\n")  # fmt: skip
    assert result.stdout == "Login Succeeded\n", result.stderr


def test_cli_pull_needs_login(daemon: KetchDaemon, private_image: str, tmp_path: Path) -> None:
    result = ketch_user(daemon, tmp_path / "config", "pull", private_image)
    assert result.returncode == 1
    assert "requires a login" in result.stderr


def test_cli_pull_after_login(
    daemon: KetchDaemon, daemon_registry: str, private_image: str, tmp_path: Path
) -> None:
    login_user(daemon, tmp_path / "config", daemon_registry)
    result = ketch_user(daemon, tmp_path / "config", "pull", "-q", private_image)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{private_image}\n"
    assert daemon.ketch("image", "inspect", private_image).returncode == 0


def test_cli_run_pulls_after_login(
    daemon: KetchDaemon, daemon_registry: str, private_image: str, tmp_path: Path
) -> None:
    login_user(daemon, tmp_path / "config", daemon_registry)
    result = ketch_user(daemon, tmp_path / "config", "run", "--rm", private_image, "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert f"Unable to find image '{private_image}' locally" in result.stderr


def test_cli_create_pulls_after_login(
    daemon: KetchDaemon, daemon_registry: str, private_image: str, tmp_path: Path
) -> None:
    login_user(daemon, tmp_path / "config", daemon_registry)
    result = ketch_user(daemon, tmp_path / "config", "create", private_image, "true")
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    assert daemon.ketch("rm", container_id).returncode == 0


def test_cli_login_wrong_password(
    daemon: KetchDaemon, daemon_registry: str, tmp_path: Path
) -> None:
    result = ketch_user(daemon, tmp_path / "config", "login", "-u", USER, "--password-stdin",
                        daemon_registry, input="wrong\n")  # fmt: skip
    assert result.returncode == 1
    assert f"rejected the credentials of user {USER}" in result.stderr
    assert not (tmp_path / "config" / "config.json").exists()


def test_cli_pull_wrong_password(
    daemon: KetchDaemon, daemon_registry: str, private_image: str, tmp_path: Path
) -> None:
    # A password changed on the registry after the login: the file has the old one.
    (tmp_path / "config").mkdir()
    stale = base64.b64encode(f"{USER}:wrong".encode()).decode()
    document = {"auths": {daemon_registry: {"auth": stale}}}
    (tmp_path / "config" / "config.json").write_text(json.dumps(document))
    result = ketch_user(daemon, tmp_path / "config", "pull", private_image)
    assert result.returncode == 1
    # ketch's message for a denied pull, ending with the registry's 401 body.
    denied = f"Error response from daemon: pull access denied for {daemon_registry}/private/bb, "
    assert result.stderr.startswith(denied)
    assert result.stderr.endswith("unauthorized: authentication required\n")


def registry_auth(user: str, password: str, registry: str) -> str:
    document = {"username": user, "password": password, "serveraddress": registry}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def test_api_pull_with_header(
    daemon: KetchDaemon, daemon_registry: str, private_image: str
) -> None:
    header = registry_auth(USER, PASSWORD, daemon_registry)
    target = f"/images/create?fromImage={daemon_registry}/private/bb&tag=v1"
    reply = request(daemon.socket_path, "POST", target, headers={"X-Registry-Auth": header})
    assert reply.status == 200
    lines = [json.loads(line) for line in reply.body.splitlines() if line.strip()]
    assert not [line for line in lines if "error" in line]
    assert daemon.ketch("image", "inspect", private_image).returncode == 0


def test_api_pull_malformed_header(daemon: KetchDaemon, daemon_registry: str) -> None:
    target = f"/images/create?fromImage={daemon_registry}/private/bb&tag=v1"
    reply = request(daemon.socket_path, "POST", target, headers={"X-Registry-Auth": "%%%"})
    assert reply.status == 400
    assert reply.json()["message"].startswith("invalid X-Registry-Auth header")


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_cli_login_then_pull(
    daemon: KetchDaemon, daemon_registry: str, private_image: str
) -> None:
    login = daemon.docker("login", "-u", USER, "-p", PASSWORD, daemon_registry)
    assert login.returncode == 0, login.stderr
    pulled = daemon.docker("pull", "-q", private_image, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == private_image
