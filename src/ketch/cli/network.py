"""``ketch network create|ls|inspect|rm|prune|connect|disconnect``, with docker's flags
and output, over the ``/networks`` routes of the Engine API."""

from __future__ import annotations

import sys

from ketch.cli.errors import ProtocolFailure, UsageError
from ketch.cli.inspect import INSPECT_FORMAT
from ketch.cli.options import TABLE_FORMAT_FLAG, Command, Flag
from ketch.cli.volume import pairs

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

DEFAULT_TABLE = "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
SHORT_ID_LENGTH = 12
PRUNE_WARNING = "This will remove all custom networks not used by at least one container."

_FILTER = Flag(
    "filter",
    "Provide filter values (e.g. 'driver=bridge')",
    short="f",
    metavar="filter",
    repeated=True,
)


def create(context: Context, options: dict, args: list[str]) -> int:
    result = context.client().call("POST", "/networks/create", body=create_body(options, args[0]))
    if not isinstance(result, dict) or "Id" not in result:
        raise ProtocolFailure(f"invalid reply to network create: {result!r}")
    if result.get("Warning"):
        sys.stderr.write(f"WARNING: {result['Warning']}\n")
    sys.stdout.write(f"{result['Id']}\n")
    return 0


def create_body(options: dict, name: str) -> dict:
    """Build the ``POST /networks/create`` body from ``network create`` flags."""
    subnets, gateways, ranges = options["subnet"], options["gateway"], options["ip-range"]
    if len(gateways) > len(subnets) or len(ranges) > len(subnets):
        raise UsageError("every --gateway and --ip-range needs a --subnet to go with it")
    configs = []
    for index, subnet in enumerate(subnets):
        config = {"Subnet": subnet}
        if index < len(gateways):
            config["Gateway"] = gateways[index]
        if index < len(ranges):
            config["IPRange"] = ranges[index]
        configs.append(config)
    if options["aux-address"]:
        configs = configs or [{}]
        configs[0]["AuxiliaryAddresses"] = pairs(options["aux-address"], "--aux-address")
    return {
        "Name": name,
        "CheckDuplicate": True,
        "Driver": options["driver"],
        "Internal": bool(options["internal"]),
        "Attachable": bool(options["attachable"]),
        "EnableIPv6": bool(options["ipv6"]),
        "IPAM": {"Driver": options["ipam-driver"], "Config": configs, "Options": {}},
        "Options": pairs(options["opt"], "--opt"),
        "Labels": pairs(options["label"], "--label", value_required=False),
    }


def list_networks(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.ps import filters_json

    query = {"filters": filters_json(options["filter"])} if options["filter"] else {}
    networks = context.client().call("GET", "/networks", query)
    if not isinstance(networks, list):
        raise ProtocolFailure(f"invalid reply to network ls: {networks!r}")
    networks.sort(key=lambda network: network.get("Name") or "")
    truncated = not options["no-trunc"]
    if options["quiet"]:
        sys.stdout.write("".join(_short_id(n["Id"], truncated) + "\n" for n in networks))
        return 0
    from ketch.cli.formatter import render
    from ketch.cli.ps import HeaderRow

    rows = [_NetworkRow(network, truncated) for network in networks]
    sys.stdout.write(render(options["format"], DEFAULT_TABLE, HeaderRow(HEADERS), rows))
    return 0


def _short_id(network_id: str, truncated: bool) -> str:
    return network_id[:SHORT_ID_LENGTH] if truncated else network_id


class _NetworkRow:
    """One ``GET /networks`` item with the fields of docker's ``network ls`` template."""

    def __init__(self, network: dict, truncated: bool) -> None:
        labels = network.get("Labels") or {}
        self.ID = _short_id(network.get("Id") or "", truncated)
        self.Name = network.get("Name") or ""
        self.Driver = network.get("Driver") or ""
        self.Scope = network.get("Scope") or ""
        self.IPv6 = str(bool(network.get("EnableIPv6"))).lower()
        self.Internal = str(bool(network.get("Internal"))).lower()
        self.Labels = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        self.CreatedAt = network.get("Created") or ""

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in sorted(HEADERS)}


def inspect(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.inspect import fetch_each, write_inspect

    found, missing = fetch_each(context.client(), args, "/networks/{name}")
    errors = [f"Error: No such network: {name}" for name, _ in missing]
    return write_inspect(options["format"], found, errors)


def remove(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.lifecycle import delete_each

    return delete_each(context.client(), args, "/networks/{name}")


def prune(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.ps import filters_json
    from ketch.cli.system import confirm

    if not confirm(options, PRUNE_WARNING):
        return 0
    query = {"filters": filters_json(options["filter"])} if options["filter"] else {}
    result = context.client().call("POST", "/networks/prune", query)
    deleted = result.get("NetworksDeleted") if isinstance(result, dict) else None
    if deleted:
        # Docker ends the list with a blank line.
        sys.stdout.write("Deleted Networks:\n" + "".join(f"{name}\n" for name in deleted) + "\n")
    return 0


def connect(context: Context, options: dict, args: list[str]) -> int:
    network, container = args
    endpoint: dict = {}
    if options["alias"]:
        endpoint["Aliases"] = list(options["alias"])
    if options["ip"]:
        endpoint["IPAMConfig"] = {"IPv4Address": options["ip"]}
    body = {"Container": container, "EndpointConfig": endpoint}
    context.client().call("POST", f"/networks/{network}/connect", body=body)
    return 0


def disconnect(context: Context, options: dict, args: list[str]) -> int:
    network, container = args
    body = {"Container": container, "Force": bool(options["force"])}
    context.client().call("POST", f"/networks/{network}/disconnect", body=body)
    return 0


VERBS = {
    "network-create": (
        Command(
            "network create",
            "ketch network create [OPTIONS] NETWORK",
            "Create a network",
            (
                Flag("attachable", "Enable manual container attachment"),
                Flag(
                    "aux-address",
                    "Auxiliary IPv4 addresses used by the network driver",
                    metavar="map",
                    repeated=True,
                ),
                Flag(
                    "driver",
                    "Driver to manage the network",
                    short="d",
                    metavar="string",
                    default="bridge",
                ),
                Flag(
                    "gateway",
                    "IPv4 gateway for the master subnet",
                    metavar="strings",
                    repeated=True,
                ),
                Flag("internal", "Restrict external access to the network"),
                Flag(
                    "ip-range",
                    "Allocate container IPs from a sub-range",
                    metavar="strings",
                    repeated=True,
                ),
                Flag(
                    "ipam-driver",
                    "IP Address Management driver",
                    metavar="string",
                    default="default",
                ),
                Flag("ipv6", "Enable IPv6 networking"),
                Flag("label", "Set metadata on a network", metavar="list", repeated=True),
                Flag("opt", "Set driver specific options", short="o", metavar="map", repeated=True),
                Flag(
                    "subnet",
                    "Subnet in CIDR format that represents a network segment",
                    metavar="strings",
                    repeated=True,
                ),
            ),
            min_args=1,
            max_args=1,
        ),
        create,
    ),
    "network-ls": (
        Command(
            "network ls",
            "ketch network ls [OPTIONS]",
            "List networks",
            (
                _FILTER,
                TABLE_FORMAT_FLAG,
                Flag("no-trunc", "Do not truncate the output"),
                Flag("quiet", "Only display network IDs", short="q"),
            ),
            max_args=0,
        ),
        list_networks,
    ),
    "network-inspect": (
        Command(
            "network inspect",
            "ketch network inspect [OPTIONS] NETWORK [NETWORK...]",
            "Display detailed information on one or more networks",
            (
                INSPECT_FORMAT,
                Flag("verbose", "Verbose output for diagnostics", short="v"),
            ),
            min_args=1,
        ),
        inspect,
    ),
    "network-rm": (
        Command(
            "network rm",
            "ketch network rm NETWORK [NETWORK...]",
            "Remove one or more networks",
            min_args=1,
        ),
        remove,
    ),
    "network-prune": (
        Command(
            "network prune",
            "ketch network prune [OPTIONS]",
            "Remove all unused networks",
            (
                Flag(
                    "filter",
                    "Provide filter values (e.g. 'label=<key>=<value>')",
                    metavar="filter",
                    repeated=True,
                ),
                Flag("force", "Do not prompt for confirmation", short="f"),
            ),
            max_args=0,
        ),
        prune,
    ),
    "network-connect": (
        Command(
            "network connect",
            "ketch network connect [OPTIONS] NETWORK CONTAINER",
            "Connect a container to a network",
            (
                Flag(
                    "alias",
                    "Add network-scoped alias for the container",
                    metavar="strings",
                    repeated=True,
                ),
                Flag("ip", "IPv4 address (e.g., 172.30.100.104)", metavar="string", default=""),
            ),
            min_args=2,
            max_args=2,
        ),
        connect,
    ),
    "network-disconnect": (
        Command(
            "network disconnect",
            "ketch network disconnect [OPTIONS] NETWORK CONTAINER",
            "Disconnect a container from a network",
            (Flag("force", "Force the container to disconnect from a network", short="f"),),
            min_args=2,
            max_args=2,
        ),
        disconnect,
    ),
}
