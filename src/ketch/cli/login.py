"""``ketch login`` and ``logout``, and the credentials store that push and pull read.

Credentials live in ``$KETCH_CONFIG/config.json`` (default ``~/.ketch/config.json``),
in docker's layout so that the file can be read the same way::

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"}}}

The file is written mode 0600 through a temporary file and a rename, so a crash leaves
the old file or the new one. Docker Hub's key is ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys

from ketch.cli.errors import UsageError
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

DOCKER_HUB = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
CONFIG_VARIABLE = "KETCH_CONFIG"


def config_path() -> str:
    directory = os.environ.get(CONFIG_VARIABLE) or os.path.join(os.path.expanduser("~"), ".ketch")
    return os.path.join(directory, "config.json")


def load_config() -> dict:
    try:
        with open(config_path(), encoding="utf-8") as file:
            config = json.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UsageError(f"invalid config file {config_path()}: {error}") from None
    return config if isinstance(config, dict) else {}


def save_config(config: dict) -> None:
    path = config_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(config, file, indent="\t")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def registry_of(reference: str) -> str:
    """Return the registry key of an image reference (its host, or Docker Hub's key)."""
    first, separator, _ = reference.partition("/")
    if separator and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def registry_host(address: str) -> str:
    """Return the lowercase ``host[:port]`` of a registry given as a host, a URL or an
    ``auths`` key, or DOCKER_HUB for any of Docker Hub's names."""
    host = address.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    return DOCKER_HUB if host in DOCKER_HUB_HOSTS or not host else host


def find_auth_keys(auths: dict, registry: str) -> list[str]:
    """Return the ``auths`` keys that name ``registry``: the key written as ``registry``
    first, then keys that differ only in spelling (``http://127.0.0.1:5000/v2/``)."""
    host = registry_host(registry)
    keys = [key for key in auths if registry_host(key) == host]
    return sorted(keys, key=lambda key: key != registry)


def registry_auth_header(reference: str) -> dict[str, str]:
    """Return the ``X-Registry-Auth`` header for the reference's registry ({} if none)."""
    registry = registry_of(reference)
    auths = load_config().get("auths")
    if not isinstance(auths, dict):
        return {}
    for key in find_auth_keys(auths, registry):
        entry = auths[key]
        if isinstance(entry, dict) and entry.get("auth"):
            user, password = _decode_auth(entry["auth"], key)
            credentials = {"username": user, "password": password, "serveraddress": registry}
            encoded = base64.urlsafe_b64encode(json.dumps(credentials).encode()).decode()
            return {"X-Registry-Auth": encoded}
    return {}


def _decode_auth(encoded: object, key: str) -> tuple[str, str]:
    """Decode an ``auth`` entry (base64 of ``user:password``) into the user and password."""
    try:
        pair = base64.b64decode(str(encoded), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        pair = ""
    user, separator, password = pair.partition(":")
    if not separator:
        raise UsageError(
            f"invalid auth entry for {key} in {config_path()}: expected base64 of "
            f"user:password. Run 'ketch login {key}' again"
        )
    return user, password


def login(context: Context, options: dict, args: list[str]) -> int:
    server = args[0] if args else DOCKER_HUB
    user = options["username"]
    password = options["password"]
    if options["password-stdin"]:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not user:
            raise UsageError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not user or not password:
        user, password = _prompt(user, password)
    if password and options["password"]:
        sys.stderr.write(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"
        )
    body = {"username": user, "password": password, "serveraddress": server}
    context.client().call("POST", "/auth", body=body)
    config = load_config()
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    # An entry under another spelling of the registry would otherwise outlive this login.
    for key in find_auth_keys(auths, server):
        del auths[key]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    auths[server] = {"auth": token}
    save_config(config)
    sys.stdout.write("Login Succeeded\n")
    return 0


def _prompt(user: str | None, password: str | None) -> tuple[str, str]:
    if not os.isatty(0):
        raise UsageError("Error: Cannot perform an interactive login from a non TTY device")
    import getpass

    if not user:
        user = input("Username: ").strip()
    if not password:
        password = getpass.getpass("Password: ")
    if not user or not password:
        raise UsageError("Error: username and password are required")
    return user, password


def logout(context: Context, options: dict, args: list[str]) -> int:
    server = args[0] if args else DOCKER_HUB
    config = load_config()
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    # Entries under every spelling of the registry are removed, so that a pull finds none.
    keys = find_auth_keys(auths, server)
    if not keys:
        sys.stdout.write(f"Not logged in to {server}\n")
        return 0
    sys.stdout.write(f"Removing login credentials for {server}\n")
    for key in keys:
        del auths[key]
    save_config(config)
    return 0


VERBS = {
    "login": (
        Command(
            "login",
            "ketch login [OPTIONS] [SERVER]",
            "Log in to a registry",
            (
                Flag("password", "Password", short="p", metavar="string"),
                Flag("password-stdin", "Take the password from stdin"),
                Flag("username", "Username", short="u", metavar="string"),
            ),
            max_args=1,
        ),
        login,
    ),
    "logout": (
        Command("logout", "ketch logout [SERVER]", "Log out from a registry", max_args=1),
        logout,
    ),
}
