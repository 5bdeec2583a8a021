"""The engine's image operations beyond pull, list and inspect: tag, remove, history,
prune, push, login, save, load, import and a container's changes.

``ImageOperations`` wraps the image store (``ketch.images.ImageStore``) with what the
Engine API adds: docker's reply shapes, the image events and the check that no container
still uses an image that is about to go.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ketch.engine import timestamps
from ketch.engine.events import EventBus
from ketch.engine.init_paths import copy_without_init_paths, init_paths, member_path
from ketch.engine.layer_usage import LayerSize
from ketch.errors import Conflict, InvalidArgument
from ketch.images.auth import Credentials, credentials_from_registry_auth, normalize_registry
from ketch.images.commit import CommitRequest, commit_image
from ketch.images.reference import DEFAULT_TAG, parse_normalized

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]

# The history entry of a layer that no image in the store has as its top layer.
MISSING_ID = "<missing>"


class ImageOperations:
    """Image operations for one engine.

    ``containers`` returns the engine's containers, and ``resolve_container`` finds one by
    ID, ID prefix or name (raising NotFound).
    """

    def __init__(
        self,
        images: Any,
        containers: Callable[[], list[Any]],
        resolve_container: Callable[[str], Any],
        events: EventBus,
    ) -> None:
        self.images = images
        self.containers = containers
        self.resolve_container = resolve_container
        self.events = events

    def tag(self, source: str, repository: str, tag: str) -> None:
        """Point ``repository:tag`` (``latest`` when ``tag`` is empty) at image ``source``."""
        if not repository:
            raise InvalidArgument("missing 'repo' parameter: the repository to tag the image in")
        target = f"{repository}:{tag}" if tag else repository
        image = self.images.get(source)
        self.images.tag(source, target)
        familiar = str(parse_normalized(target).familiar())
        if ":" not in familiar.rsplit("/", 1)[-1]:
            familiar = f"{familiar}:{DEFAULT_TAG}"
        self.events.publish("image", "tag", image.id, {"name": familiar})

    def remove(self, name: str, force: bool) -> list[dict[str, str]]:
        """Untag or delete an image; return docker's ``Untagged``/``Deleted`` list.

        The image store raises Conflict, in dockerd's wording, when a container's rootfs
        still uses the image.
        """
        image = self.images.get(name)
        result = self.images.remove(name, force=force)
        if not any("Deleted" in entry for entry in result):
            result += self._untag_orphaned_digests(image.id, result)
        for entry in result:
            for action, value in entry.items():
                event_action = "untag" if action == "Untagged" else "delete"
                self.events.publish("image", event_action, image.id, {"name": value})
        return result

    def _untag_orphaned_digests(
        self, image_id: str, untagged: list[dict[str, str]]
    ) -> list[dict[str, str]]:
        """Untag the digest references of each repository whose last tag of this image was
        just untagged, as docker's ``rmi`` does, so no ``repo <none>`` row stays behind."""
        removed = [parse_normalized(entry["Untagged"]) for entry in untagged if "Untagged" in entry]
        repositories = {reference.name for reference in removed if reference.digest is None}
        remaining = [parse_normalized(name) for name, _ in self.images.metadata.names(image_id)]
        tagged = {reference.name for reference in remaining if reference.digest is None}
        result: list[dict[str, str]] = []
        for reference in remaining:
            if reference.digest and reference.name in repositories - tagged:
                # The image keeps other tags or a container, so this only drops the name.
                result += self.images.remove(str(reference), force=True)
        return result

    def history(self, name: str) -> list[dict[str, Any]]:
        """Return ``GET /images/{name}/history``: one entry per history step, newest first."""
        image = self.images.get(name)
        config = json.loads(self.images.content.read(image.id))
        layers = self.images.metadata.layers(image.id)
        steps = config.get("history") or [{} for _ in layers]
        entries: list[dict[str, Any]] = []
        layer_index = 0
        for step in steps:
            size = 0
            if not step.get("empty_layer") and layer_index < len(layers):
                size = self._layer_size(layers[layer_index])
                layer_index += 1
            entries.append(
                {
                    "Id": MISSING_ID,
                    "Created": int(timestamps.to_epoch(step.get("created", "")) or 0),
                    "CreatedBy": step.get("created_by", ""),
                    "Tags": None,
                    "Size": size,
                    "Comment": step.get("comment", ""),
                }
            )
        entries.reverse()
        if entries:
            entries[0]["Id"] = image.id
            entries[0]["Tags"] = list(image.repo_tags)
        return entries

    def layer_sizes(self, image_id: str) -> list[LayerSize]:
        """Return the image's layers, bottom first, with their unpacked sizes."""
        return [
            LayerSize(layer.chain_id, self._layer_size(layer))
            for layer in self.images.metadata.layers(image_id)
        ]

    def _layer_size(self, layer: Any) -> int:
        """Return the unpacked size of a layer, or its blob's size when it is not unpacked."""
        snapshot = self.images.snapshots.stat(layer.chain_id)
        return snapshot.size if snapshot is not None else layer.blob_size

    def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        """Remove images that no container uses: only untagged ones unless the filter
        ``dangling=false`` selects all (``docker image prune -a``)."""
        unknown = sorted(set(filters) - {"dangling"})
        if unknown:
            raise InvalidArgument(f"invalid filter {unknown[0]!r}: image prune supports dangling")
        dangling_only = True
        for value in filters.get("dangling", []):
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}': expected true or false")
            dangling_only = value.lower() in ("true", "1")
        used = {container.image_id for container in self.containers()}
        deleted: list[dict[str, str]] = []
        reclaimed = 0
        for image in self.images.list():
            if image.id in used or (dangling_only and image.repo_tags):
                continue
            try:
                deleted += self.images.remove(image.id, force=True)
            except Conflict as error:
                log.info("image prune kept %s: %s", image.id, error)
                continue
            reclaimed += image.size
            self.events.publish("image", "delete", image.id, {"name": image.id})
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    async def push(
        self, name: str, tag: str, registry_auth: str, progress: ProgressCallback
    ) -> str:
        """Push ``name`` (with ``tag`` when given) and return the manifest digest.

        ``registry_auth`` is the X-Registry-Auth header; empty means the stored credentials.
        """
        auth = credentials_from_registry_auth(registry_auth)
        reference = f"{name}:{tag}" if tag else name
        digest = await self.images.push(reference, progress, auth=auth)
        self.events.publish("image", "push", reference, {"name": reference})
        return digest

    async def login(self, body: Any) -> dict[str, str]:
        """Check the credentials of a ``POST /auth`` body against their registry.

        Raises Forbidden when the registry rejects them.
        """
        if not isinstance(body, dict):
            raise InvalidArgument("invalid auth body: expected a JSON object")
        username = body.get("username") or ""
        password = body.get("password") or ""
        registry = body.get("serveraddress") or "docker.io"
        if not all(isinstance(value, str) for value in (username, password, registry)):
            raise InvalidArgument(
                "invalid auth body: username, password and serveraddress must be strings"
            )
        if not username:
            raise InvalidArgument("invalid auth body: missing 'username'")
        # Imported here because only the registry requests (pull, push, login, search)
        # need the registry client and its HTTP code.
        from ketch.images.endpoints import endpoints_for
        from ketch.images.registry import check_login, open_session

        # As with dockerd, the credentials are only checked: the client stores them.
        domain = normalize_registry(registry)
        endpoint = endpoints_for(domain, [], self.images.insecure_registries)[0]
        async with open_session() as session:
            await check_login(session, endpoint, Credentials(username, password))
        log.info("login check for %s at %s succeeded", username, domain)
        return {"Status": "Login Succeeded", "IdentityToken": ""}

    async def save(self, names: list[str], out: BinaryIO) -> None:
        """Write ``names`` as a ``docker save`` tar stream to ``out``."""
        for name in names:
            self.images.get(name)
        await self.images.save(names, out)

    async def load(self, source: BinaryIO) -> list[str]:
        """Load a ``docker save`` or OCI archive; return docker's ``Loaded image`` lines."""
        loaded = await self.images.load(source)
        lines = []
        for image in loaded:
            self.events.publish("image", "load", image.id, {"name": image.id})
            if image.repo_tags:
                lines += [f"Loaded image: {tag}" for tag in image.repo_tags]
            else:
                lines.append(f"Loaded image ID: {image.id}")
        return lines

    async def import_rootfs(
        self,
        source: BinaryIO,
        repository: str,
        tag: str,
        changes: list[str] | None = None,
        message: str = "",
    ) -> str:
        """Record a rootfs tarball as an image named ``repository:tag`` and return its ID.

        ``changes`` are Dockerfile instructions for the image config (``docker import
        --change``), and ``message`` is its history comment (``--message``).
        """
        # Checked before the tarball is read, so that a bad change stores nothing.
        container_config = apply_changes({}, changes or [])
        reference = None
        if repository:
            reference = f"{repository}:{tag}" if tag else repository
        image = await self.images.import_rootfs(
            source, reference, container_config=container_config, comment=message
        )
        self.events.publish("image", "import", image.id, {"name": reference or image.id})
        return image.id

    async def commit(
        self,
        reference: str,
        options: dict[str, str],
        changes: list[str],
        config: Any,
        spool_dir: Path,
    ) -> str:
        """Record the changes of container ``reference`` as a new image; return its ID.

        ``options`` contains the query's repo, tag, comment and author, ``changes`` the
        Dockerfile instructions to apply, and ``config`` the request body, whose config
        fields replace the container's.
        """
        if config is not None and not isinstance(config, dict):
            raise InvalidArgument(
                "invalid commit body: expected a JSON object (a container config)"
            )
        container = self.resolve_container(reference)
        image_config = apply_changes({**container.config, **(config or {})}, changes)
        repository, tag = options.get("repo", ""), options.get("tag", "")
        if tag and not repository:
            raise InvalidArgument("invalid commit: a tag needs the 'repo' parameter as well")
        name = (f"{repository}:{tag}" if tag else repository) or None
        request = CommitRequest(
            container_id=container.id,
            config=image_config,
            comment=options.get("comment", ""),
            author=options.get("author", ""),
            reference=name,
            # dockerd records the committed container's Cmd, joined with spaces.
            created_by=" ".join(container.config.get("Cmd") or []),
        )
        with (
            tempfile.NamedTemporaryFile(dir=spool_dir) as diff,
            tempfile.NamedTemporaryFile(dir=spool_dir) as layer,
        ):
            self.images.diff_rootfs(container.id, diff)
            diff.seek(0)
            layer_path = Path(layer.name if copy_without_init_paths(diff, layer) else diff.name)
            diff.flush()
            layer.flush()
            image_id = await commit_image(self.images, container.image_id, layer_path, request)
        self.events.publish("container", "commit", container.id, {"comment": request.comment})
        return image_id

    def changes(self, reference: str, spool_dir: Path) -> list[dict[str, Any]]:
        """Return ``GET /containers/{id}/changes`` for the container ``reference`` names."""
        container = self.resolve_container(reference)
        return container_changes(self.images, container.id, spool_dir)


# The Kind values of GET /containers/{id}/changes.
CHANGE_MODIFIED = 0
CHANGE_ADDED = 1
CHANGE_DELETED = 2

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"


def container_changes(images: Any, container_id: str, spool_dir: Path) -> list[dict[str, Any]]:
    """Return what a container changed in its rootfs as ``{"Path", "Kind"}`` entries.

    The changes come from the layer tar that commit would record, without the mount
    targets of the container's set-up: a whiteout entry is a deletion, and any other entry
    is an addition unless the image's layers have that path.
    """
    # Limitation: the diff runs on the event loop thread, because the image store's
    # SQLite connection belongs to that thread.
    with tempfile.TemporaryFile(dir=spool_dir) as spool:
        images.diff_rootfs(container_id, spool)
        spool.seek(0)
        with tarfile.open(fileobj=spool) as tar:
            names = tar.getnames()
    dropped = init_paths(names)
    names = [name for name in names if member_path(name) not in dropped]
    layers = images.metadata.layers(images.rootfs.image_of(container_id))
    lowerdirs = images.snapshots.lowerdirs(layers[-1].chain_id) if layers else []

    kinds: dict[str, int] = {}
    for name in names:
        path = "/" + name.strip("/").removeprefix("./")
        if path == "/":
            continue
        directory, base = path.rsplit("/", 1)
        if base == OPAQUE_WHITEOUT:
            kinds.setdefault(directory or "/", CHANGE_MODIFIED)
        elif base.startswith(WHITEOUT_PREFIX):
            kinds[f"{directory}/{base.removeprefix(WHITEOUT_PREFIX)}"] = CHANGE_DELETED
        else:
            in_image = any(_exists_below(lowerdir, path) for lowerdir in lowerdirs)
            kinds[path] = CHANGE_MODIFIED if in_image else CHANGE_ADDED
    return [{"Path": path, "Kind": kinds[path]} for path in sorted(kinds)]


def _exists_below(root: Path, path: str) -> bool:
    """Return whether ``path`` exists under ``root`` without following any symbolic link,
    so a link in a layer cannot point the check outside the layer."""
    # NOTE: a whiteout in an upper layer of the image does not hide the path of a lower
    # layer here, so a path the image deleted and the container re-created reads as C.
    components = [part for part in path.split("/") if part]
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in components[:-1]:
            try:
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory
                )
            except OSError:
                return False
            os.close(directory)
            directory = child
        try:
            os.stat(components[-1], dir_fd=directory, follow_symlinks=False)
        except OSError:
            return False
        return True
    finally:
        os.close(directory)


# Dockerfile instructions that docker commit --change accepts, with the config key each sets.
_CHANGE_KEYS = {
    "CMD": "Cmd",
    "ENTRYPOINT": "Entrypoint",
    "ENV": "Env",
    "LABEL": "Labels",
    "WORKDIR": "WorkingDir",
    "USER": "User",
    "EXPOSE": "ExposedPorts",
    "STOPSIGNAL": "StopSignal",
    "VOLUME": "Volumes",
}


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile instructions such as ``CMD ["sh"]`` or ``ENV A=1`` to a container
    config and return the result; raise InvalidArgument naming a change it cannot apply."""
    result = dict(config)
    for change in changes:
        instruction, _, argument = change.strip().partition(" ")
        key = _CHANGE_KEYS.get(instruction.upper())
        argument = argument.strip()
        if key is None or not argument:
            supported = ", ".join(_CHANGE_KEYS)
            raise InvalidArgument(
                f"invalid change {change!r}: expected one of {supported} with an argument"
            )
        if key in ("Cmd", "Entrypoint"):
            result[key] = _command(argument)
        elif key == "Env":
            result["Env"] = [*(result.get("Env") or []), *_pairs(argument, change)]
        elif key == "Labels":
            labels = dict(result.get("Labels") or {})
            labels.update(pair.split("=", 1) for pair in _pairs(argument, change))
            result["Labels"] = labels
        elif key in ("ExposedPorts", "Volumes"):
            values = dict(result.get(key) or {})
            for item in _command(argument) if argument.startswith("[") else argument.split():
                port = item if "/" in item or key == "Volumes" else f"{item}/tcp"
                values[port] = {}
            result[key] = values
        else:
            result[key] = argument
    return result


def _command(argument: str) -> list[str]:
    """Read the exec form (a JSON array) or the shell form of CMD and ENTRYPOINT."""
    if argument.startswith("["):
        try:
            value = json.loads(argument)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
    return ["/bin/sh", "-c", argument]


def _pairs(argument: str, change: str) -> list[str]:
    import shlex  # only commit changes need it

    pairs = shlex.split(argument)
    if not all("=" in pair for pair in pairs):
        raise InvalidArgument(f"invalid change {change!r}: expected KEY=VALUE pairs")
    return pairs
