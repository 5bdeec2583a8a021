"""The route table's image routes and its 501 reply for Docker routes ketch lacks."""

from __future__ import annotations

import pytest

from ketch.api import image_routes, routes


@pytest.mark.parametrize(
    ("method", "path", "handler"),
    [
        ("POST", "/images/library/busybox/tag", image_routes.tag_image),
        ("DELETE", "/images/127.0.0.1:5000/a/b:v1", image_routes.remove_image),
        ("GET", "/images/busybox/history", image_routes.image_history),
        ("GET", "/images/get", image_routes.save_images),
        ("GET", "/images/a/b/get", image_routes.save_image),
        ("POST", "/images/a/b/push", image_routes.push_image),
        ("POST", "/images/load", image_routes.load_images),
        ("POST", "/images/prune", image_routes.prune_images),
        ("POST", "/images/create", image_routes.create_image),
        ("POST", "/auth", image_routes.login),
        ("POST", "/commit", image_routes.commit_container),
        ("GET", "/containers/abc/changes", image_routes.container_changes),
    ],
)
def test_route_image_handler(method: str, path: str, handler: object) -> None:
    match = routes.match_route(method, path)
    assert match is not None
    assert match[0] is handler


def test_route_name_with_slashes() -> None:
    match = routes.match_route("POST", "/images/127.0.0.1:5000/a/b/tag")
    assert match is not None
    assert match[1] == {"name": "127.0.0.1:5000/a/b"}


def test_route_docker_only_is_501() -> None:
    match = routes.match_route("POST", "/swarm/init")
    assert match is not None
    assert match[0] is routes.not_implemented
    assert match[1] == {"method": "POST", "template": "/swarm/init"}


def test_route_docker_template_with_name() -> None:
    assert routes.docker_route_template("GET", "/distribution/a/b/json") == (
        "/distribution/{name}/json"
    )


def test_route_docker_template_with_id() -> None:
    assert routes.docker_route_template("DELETE", "/networks/abc") == "/networks/{id}"


def test_route_unknown_path() -> None:
    assert routes.match_route("GET", "/no/such/path") is None


def test_route_wrong_method_on_docker_path() -> None:
    assert routes.match_route("PATCH", "/swarm/init") is None
