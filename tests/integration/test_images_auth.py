"""Logging in to real registries: docker-registry with htpasswd Basic auth and one behind a
token service that the test runs on loopback."""

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import Forbidden, NotFound
from ketch.images import ImageStore
from ketch.images.auth import Credentials
from ketch.images.endpoints import Endpoint
from ketch.images.registry import open_session, push_image
from support.images import Dir, File, gzip_layer, image_config, image_store
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
