"""Pushing from an ImageStore to real registries (Debian's docker-registry on loopback)."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import support.registry
from ketch.errors import Forbidden, InvalidArgument, NotFound
from ketch.images import ImageStore
from ketch.images.push import PushOptions
from support.images import Dir, File, gzip_layer, image_store, push_test_image
from support.registry import start_registry
from support.registry_auth import start_htpasswd_registry, start_token_registry

registry = support.registry.registry

BASE = gzip_layer({"etc/": Dir(), "etc/motd": File(b"base\n")})
# Random bytes do not compress, so this layer stays larger than the chunk size below.
BIG = gzip_layer({"data/": Dir(), "data/random": File(os.urandom(200_000))})
USER, PASSWORD = "alice", "s3cret-pass"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path / "ketch", docker_config=tmp_path / "docker.json") as opened:
        yield opened


@pytest.fixture
def second_registry(tmp_path: Path) -> Iterator[str]:
    running = start_registry(tmp_path / "second")
    try:
        yield running.address
    finally:
        running.stop()


def push(store: ImageStore, reference: str, **options: Any) -> tuple[str, list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    push_options = PushOptions(**options) if options else None
    digest = asyncio.run(store.push(reference, messages.append, push_options))
    return digest, messages


def statuses(messages: list[dict[str, Any]]) -> list[str]:
    return [message["status"] for message in messages if "status" in message]


def pull_into_new_store(tmp_path: Path, reference: str) -> str:
    with image_store(tmp_path / "fresh") as fresh:
        return asyncio.run(fresh.pull(reference)).id


def test_push_to_other_registry(
    tmp_path: Path, store: ImageStore, registry: str, second_registry: str
) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, BIG])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    store.tag(f"{registry}/test/app:v1", f"{second_registry}/copy/app:v2")
    digest, messages = push(store, f"{second_registry}/copy/app:v2")
    assert digest == pushed.manifest_digest
    assert statuses(messages).count("Pushed") == 2
    assert pull_into_new_store(tmp_path, f"{second_registry}/copy/app:v2") == pushed.config_digest


def test_push_progress_messages(store: ImageStore, registry: str, second_registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    store.tag(f"{registry}/test/app:v1", f"{second_registry}/copy/app")
    digest, messages = push(store, f"{second_registry}/copy/app")
    short = pushed.diff_ids[0].removeprefix("sha256:")[:12]
    assert messages[0] == {"status": f"The push refers to repository [{second_registry}/copy/app]"}
    assert messages[1] == {"status": "Preparing", "progressDetail": {}, "id": short}
    assert messages[-3] == {"status": "Pushed", "progressDetail": {}, "id": short}
    assert messages[-2]["status"] == f"latest: digest: {digest} size: {messages[-1]['aux']['Size']}"
    assert messages[-1]["aux"]["Digest"] == digest
    assert "Pushing" in statuses(messages)


def test_push_again_layer_exists(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    _, messages = push(store, f"{registry}/test/app:v1")
    assert "Layer already exists" in statuses(messages)
    assert "Pushed" not in statuses(messages)


def test_push_mounts_across_repositories(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    store.tag(f"{registry}/test/app:v1", f"{registry}/other/app:v1")
    _, messages = push(store, f"{registry}/other/app:v1")
    assert "Mounted from test/app" in statuses(messages)
    assert "Pushed" not in statuses(messages)


def test_push_chunked(
    tmp_path: Path, store: ImageStore, registry: str, second_registry: str
) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, BIG])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    store.tag(f"{registry}/test/app:v1", f"{second_registry}/chunked/app:v1")
    push(store, f"{second_registry}/chunked/app:v1", monolithic_max=1000, chunk_size=64 * 1024)
    assert pull_into_new_store(tmp_path, f"{second_registry}/chunked/app:v1") == (
        pushed.config_digest
    )


def test_push_records_repo_digest(store: ImageStore, registry: str, second_registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    store.tag(f"{registry}/test/app:v1", f"{second_registry}/copy/app:v1")
    digest, _ = push(store, f"{second_registry}/copy/app:v1")
    image = store.get(f"{second_registry}/copy/app:v1")
    assert f"{second_registry}/copy/app@{digest}" in image.repo_digests


def test_push_unknown_image(store: ImageStore, registry: str) -> None:
    with pytest.raises(NotFound, match="No such image"):
        push(store, f"{registry}/nothing/here:v1")


def test_push_digest_reference(store: ImageStore, registry: str) -> None:
    with pytest.raises(InvalidArgument, match="expected a tag, not a digest"):
        push(store, f"{registry}/a/b@sha256:" + "0" * 64)


def test_tag_moves_name(store: ImageStore, registry: str) -> None:
    first = push_test_image(registry, "test/app", "v1", [BASE])
    second = push_test_image(registry, "test/app", "v2", [BASE, BIG])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    asyncio.run(store.pull(f"{registry}/test/app:v2"))
    store.tag(f"{registry}/test/app:v1", "mine:latest")
    assert store.get("mine").id == first.config_digest
    store.tag(f"{registry}/test/app:v2", "mine")
    assert store.get("mine").id == second.config_digest


def test_tag_with_digest_rejected(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    with pytest.raises(InvalidArgument, match="a tag cannot contain a digest"):
        store.tag(f"{registry}/test/app:v1", "mine@sha256:" + "0" * 64)


def test_tag_unknown_source(store: ImageStore) -> None:
    with pytest.raises(NotFound, match="No such image: nothing"):
        store.tag("nothing", "mine")


def test_push_basic_auth(tmp_path: Path, store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    with start_htpasswd_registry(tmp_path / "basic", USER, PASSWORD) as private:
        store.tag(f"{registry}/test/app:v1", f"{private.address}/private/app:v1")
        with pytest.raises(Forbidden, match="requires a login"):
            push(store, f"{private.address}/private/app:v1")
        asyncio.run(store.login(private.address, USER, PASSWORD))
        _, messages = push(store, f"{private.address}/private/app:v1")
    assert "Pushed" in statuses(messages)


def test_push_token_auth_with_mount(tmp_path: Path, store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    with start_token_registry(tmp_path / "token", {USER: PASSWORD}) as (private, service):
        asyncio.run(store.login(private.address, USER, PASSWORD))
        store.tag(f"{registry}/test/app:v1", f"{private.address}/first/app:v1")
        store.tag(f"{registry}/test/app:v1", f"{private.address}/second/app:v1")
        _, first = push(store, f"{private.address}/first/app:v1")
        _, second = push(store, f"{private.address}/second/app:v1")
    assert "Pushed" in statuses(first)
    assert "Mounted from first/app" in statuses(second)
    assert any("repository:first/app:pull" in r.scopes for r in service.requests)


def test_push_waits_for_upload_slot(store: ImageStore, registry: str, second_registry: str) -> None:
    layers = [gzip_layer({f"f{n}": File(f"{n}\n".encode())}) for n in range(5)]
    pushed = push_test_image(registry, "test/many", "v1", layers)
    asyncio.run(store.pull(f"{registry}/test/many:v1"))
    store.tag(f"{registry}/test/many:v1", f"{second_registry}/copy/many:v1")
    _, messages = push(store, f"{second_registry}/copy/many:v1")
    waiting = {m["id"] for m in messages if m.get("status") == "Waiting"}
    assert len(waiting) == 2
    assert statuses(messages).count("Pushed") == len(pushed.diff_ids)
