"""The network routes of the Engine API, served by ``engine.networks``
(``ketch.engine.networks.NetworkOperations``).

    GET    /networks                  list, with filters name, id, label, driver, type,
                                      dangling and scope
    GET    /networks/{id}             inspect, with the Containers map
    POST   /networks/create           201 {"Id", "Warning"}
    POST   /networks/{id}/connect     200, body {"Container", "EndpointConfig"}
    POST   /networks/{id}/disconnect  200, body {"Container", "Force"}
    DELETE /networks/{id}             204
    POST   /networks/prune            200 {"NetworksDeleted"}, with filters label and label!
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ketch.errors import InvalidArgument

if TYPE_CHECKING:
    from ketch.api.routes import Call


def _filters(call: Call) -> dict[str, list[str]]:
    from ketch.api.routes import parse_filters

    return parse_filters(call.request.query.get("filters", ""))


async def list_networks(call: Call) -> None:
    await call.http.send_json(200, await call.engine.networks.list(_filters(call)))


async def inspect_network(call: Call) -> None:
    # Limitation: 'verbose' and 'scope' are accepted and ignored: every network is local.
    await call.http.send_json(200, await call.engine.networks.inspect(call.parameters["id"]))


async def create_network(call: Call) -> None:
    body = call.request.json_body()
    if body is None:
        raise InvalidArgument("invalid network config: the request body is empty")
    await call.http.send_json(201, await call.engine.networks.create(body))


async def connect_network(call: Call) -> None:
    await call.engine.networks.connect(call.parameters["id"], call.request.json_body())
    await call.http.send(200, b"")


async def disconnect_network(call: Call) -> None:
    await call.engine.networks.disconnect(call.parameters["id"], call.request.json_body())
    await call.http.send(200, b"")


async def remove_network(call: Call) -> None:
    await call.engine.networks.remove(call.parameters["id"])
    await call.http.send(204)


async def prune_networks(call: Call) -> None:
    await call.http.send_json(200, await call.engine.networks.prune(_filters(call)))
