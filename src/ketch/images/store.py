"""The image store: what the engine calls to pull, find, list and remove images and to
mount container root filesystems.

It ties together the parts that each own a piece of ``<root>`` (the engine passes
``<data-root>/images``)::

    <root>/
        blobs/sha256/<hex>    content store (ketch.images.content)
        ingest/               blobs being written (ketch.images.content)
        snapshotter           the snapshotter that owns snapshots/ (ketch.images.snapshots)
        snapshots/<n>/fs      unpacked layers by chain ID (ketch.images.snapshots)
        containers/<id>/      container root filesystems (ketch.images.rootfs)
        archives/<random>/    archives being loaded (ketch.images.archive)

and the ``image_`` tables in the engine's SQLite database (ketch.images.metadata).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.images.auth import Credentials, CredentialStore, normalize_registry
from ketch.images.content import ContentStore
from ketch.images.diff import LayerDiff
from ketch.images.endpoints import endpoints_for, validate_insecure_registry, validate_mirror
from ketch.images.layers import DEFAULT_LIMITS, UnpackLimits
from ketch.images.leases import Leases
from ketch.images.loading import ImageFiles, LoadedImage
from ketch.images.metadata import ImageMetadata, ImageRecord
from ketch.images.pull_progress import ProgressCallback
from ketch.images.reference import (
    DEFAULT_TAG,
    Reference,
    is_image_id,
    parse_normalized,
    parse_reference,
)
from ketch.images.rootfs import RootfsManager
from ketch.images.snapshots import open_snapshotter

if TYPE_CHECKING:
    from ketch.images.push import PushOptions

# The pull, push and login code is imported where it is called, because with the registry
# client it adds about 0.5 MiB to ketchd's memory (CPython 3.11). A daemon that never
# contacts a registry should not pay for it.

log = logging.getLogger(__name__)

# A short image ID: hex digits, with or without "sha256:" in front.
_ID_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{1,64})")


@dataclass
class Image:
    """An image as the engine uses it, with names in docker's familiar form."""

    id: str  # "sha256:<config digest>"
    repo_tags: list[str]
    repo_digests: list[str]
    created: str  # RFC 3339, from the image config
    size: int  # bytes of file content in the image's layers
    config: dict[str, Any]  # the config's "config" object: Env, Cmd, Entrypoint, ...
    architecture: str
    os: str
    diff_ids: list[str] = field(default_factory=list)
    comment: str = ""  # the config's "comment": docker commit's and import's --message
    author: str = ""  # the config's "author": docker commit's --author


class ImageStore:
    """Images under ``root``, metadata in ``db`` (used from the event loop thread only).

    ``mirrors`` are registry mirror URLs for docker.io, tried in order, like dockerd's
    ``registry-mirrors``. ``insecure_registries`` are ``host[:port]`` or CIDR entries
    spoken to over plain HTTP, as localhost and loopback addresses always are.
    ``snapshotter`` is "overlay" or "copy" (see ketch.images.snapshots).
    ``unpack_limits`` bounds what one layer may unpack to (see ketch.images.layers).
    ``docker_config`` is the docker client config file with registry credentials
    (default ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``).
    """

    def __init__(
        self,
        root: Path,
        db: sqlite3.Connection,
        *,
        mirrors: Sequence[str] = (),
        insecure_registries: Sequence[str] = (),
        snapshotter: str = "overlay",
        unpack_limits: UnpackLimits = DEFAULT_LIMITS,
        docker_config: Path | None = None,
    ) -> None:
        self.root = root
        self.credentials = CredentialStore(docker_config)
        self.mirrors = [validate_mirror(url) for url in mirrors]
        self.insecure_registries = [validate_insecure_registry(e) for e in insecure_registries]
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.content = ContentStore(root)
        self.metadata = ImageMetadata(db)
        self.snapshots = open_snapshotter(snapshotter, root, db)
        self.unpack_limits = unpack_limits
        self.rootfs = RootfsManager(root, db, self.snapshots)
        self.files = ImageFiles(self)
        self.leases = Leases()
        self._configs: dict[str, dict[str, Any]] = {}

    async def pull(
        self,
        reference: str,
        progress: ProgressCallback | None = None,
        auth: Credentials | None = None,
    ) -> Image:
        """Pull ``reference`` from its registry (or docker.io's mirrors) and return it.

        ``auth`` are credentials for this pull only (the Engine API's X-Registry-Auth);
        without them the stored ones for the registry are used, if any.

        Raises InvalidArgument ('invalid reference format: ...'), NotFound (no such
        manifest or repository), Unavailable (registry unreachable, naming it).
        """
        from ketch.images.pull import Puller

        parsed = parse_reference(reference)
        puller = Puller(
            content=self.content,
            snapshots=self.snapshots,
            metadata=self.metadata,
            leases=self.leases,
            mirrors=self.mirrors,
            insecure_registries=self.insecure_registries,
            collect_garbage=self._collect_garbage,
            reference=parsed,
            progress=progress,
            credentials=self.credentials,
            auth=auth,
            unpack_limits=self.unpack_limits,
        )
        image_id = await puller.run()
        return self._load(image_id)

    async def login(self, registry: str, username: str, password: str) -> str:
        """Check the credentials against ``registry`` and store them; return docker's
        ``Login Succeeded``. Raises Forbidden when the registry rejects them."""
        if not username:
            raise InvalidArgument("login needs a user name")
        credentials = Credentials(username, password)
        domain = normalize_registry(registry)
        endpoint = endpoints_for(domain, [], self.insecure_registries)[0]
        from ketch.images.registry import check_login, open_session

        async with open_session() as session:
            await check_login(session, endpoint, credentials)
        self.credentials.store(domain, credentials)
        return "Login Succeeded"

    async def push(
        self,
        reference: str,
        progress: ProgressCallback | None = None,
        options: PushOptions | None = None,
        auth: Credentials | None = None,
    ) -> str:
        """Push the image named ``reference`` (``latest`` when it has no tag) to its
        registry and return the manifest digest. ``auth`` is as for ``pull``.

        Raises NotFound ('No such image: ...') when the store has no such name, Forbidden
        when the registry denies the push, Unavailable when it cannot be reached.
        """
        parsed = parse_normalized(reference)
        if parsed.digest is not None:
            raise InvalidArgument(f"cannot push {reference}: expected a tag, not a digest")
        if parsed.tag is None:
            parsed = parsed.with_tag(DEFAULT_TAG)
        image_id = self._resolve(str(parsed))
        from ketch.images.push import Pusher

        pusher = Pusher(
            content=self.content,
            metadata=self.metadata,
            credentials=self.credentials,
            insecure_registries=self.insecure_registries,
            image_id=image_id,
            reference=parsed,
            progress=progress,
            options=options,
            auth=auth,
        )
        return await pusher.run()

    def tag(self, source: str, target: str) -> None:
        """Point the tag ``target`` (``latest`` when it names none) at the image ``source``
        names; a tag that named another image moves, as with docker tag."""
        image_id = self._resolve(source)
        parsed = parse_normalized(target)
        if parsed.digest is not None:
            raise InvalidArgument(
                f"invalid tag {target!r}: a tag cannot contain a digest (@sha256:...)"
            )
        record = self.metadata.image(image_id)
        if record is None:
            raise NotFound(f"No such image: {source}")
        name = f"{parsed.name}:{parsed.tag or DEFAULT_TAG}"
        self.metadata.add_image(record, [], set(), {name: "tag"})
        log.info("tagged image %s as %s", image_id, name)

    def logout(self, registry: str) -> bool:
        """Remove the stored credentials for ``registry``; return whether there were any."""
        return self.credentials.remove(registry)

    def get(self, name_or_id: str) -> Image:
        """Find an image by name (``busybox`` means ``busybox:latest``), by ``name@digest``,
        by full ID or by a unique ID prefix. Raises NotFound('No such image: ...')."""
        return self._load(self._resolve(name_or_id))

    def list(self) -> list[Image]:
        """Return every image, most recently stored first."""
        return [self._load(record.id, record) for record in self.metadata.images()]

    def remove(self, name_or_id: str, force: bool = False) -> list[dict[str, str]]:
        """Untag or delete an image and return docker's list of ``Untagged``/``Deleted``.

        A name removes that name, and the image goes (with its digest references) once
        no tag is left. An ID removes
        the image with all its names; one with several repositories needs ``force``. An
        image whose rootfs a container uses is never deleted (Conflict).
        """
        image_id, name = self._lookup(name_or_id)
        users = self.rootfs.users(image_id)
        names = self.metadata.names(image_id)
        short_id = image_id.removeprefix("sha256:")[:12]

        if name is not None:
            other_tags = [n for n, kind in names if kind == "tag" and n != name]
            if users and not force and not other_tags:
                raise Conflict(
                    f'conflict: unable to remove repository reference "{name_or_id}" '
                    f"(must force) - container {users[0][:12]} is using its referenced "
                    f"image {short_id}"
                )
            self.metadata.remove_name(name)
            result = [{"Untagged": _familiar(name)}]
            if other_tags or users:
                return result
            # The last tag is gone, so the image goes with its digest references, as
            # docker's ``rmi`` does.
            result += [{"Untagged": _familiar(n)} for n, _ in names if n != name]
        else:
            if users:
                raise Conflict(
                    f"conflict: unable to delete {short_id} (cannot be forced) - image is "
                    f"being used by container {users[0][:12]}"
                )
            repositories = {_repository(name) for name, kind in names if kind == "tag"}
            if len(repositories) > 1 and not force:
                raise Conflict(
                    f"conflict: unable to delete {short_id} (must be forced) - image is "
                    "referenced in multiple repositories"
                )
            result = [{"Untagged": _familiar(name)} for name, _ in names]

        self._delete_image(image_id)
        result.append({"Deleted": image_id})
        return result

    def prepare_rootfs(self, container_id: str, image: Image) -> Path:
        """Mount an overlayfs rootfs for ``container_id`` from ``image``; return its path.

        Calling it again for the same container returns the existing mount.
        """
        layers = self.metadata.layers(image.id)
        if self.metadata.image(image.id) is None:
            raise NotFound(f"No such image: {image.id}")
        top_chain_id = layers[-1].chain_id if layers else None
        return self.rootfs.prepare(container_id, image.id, top_chain_id)

    def release_rootfs(self, container_id: str) -> None:
        """Unmount and delete the rootfs of ``container_id``; safe to call again."""
        self.rootfs.release(container_id)

    def diff_rootfs(self, container_id: str, out: BinaryIO) -> LayerDiff:
        """Write what ``container_id`` changed in its rootfs to ``out`` as a plain layer
        tar (for commit); runs on the calling thread."""
        layers = self.metadata.layers(self.rootfs.image_of(container_id))
        return self.rootfs.diff(container_id, layers[-1].chain_id if layers else None, out)

    async def load(self, source: BinaryIO | Path) -> list[LoadedImage]:
        """Load the images of a ``docker save`` or OCI archive stream, or of an OCI
        layout directory when ``source`` is a Path (see ketch.images.archive)."""
        return await self.files.load(source)

    async def save(self, names: list[str], out: BinaryIO | Path) -> None:
        """Write the images ``names`` to ``out``: a tar stream that ``docker load`` and
        ``podman load`` read, or an OCI layout directory when ``out`` is a Path."""
        await self.files.save(names, out)

    async def import_rootfs(
        self,
        stream: BinaryIO,
        reference: str | None = None,
        *,
        container_config: dict[str, Any] | None = None,
        comment: str = "",
    ) -> Image:
        """Record the rootfs tarball ``stream`` as a one-layer image named ``reference``,
        with ``container_config`` as its config's "config" object and ``comment`` as its
        message (see ImageFiles.import_rootfs)."""
        loaded = await self.files.import_rootfs(
            stream, reference, container_config=container_config, comment=comment
        )
        return self._load(loaded.id)

    def _resolve(self, text: str) -> str:
        return self._lookup(text)[0]

    def _lookup(self, text: str) -> tuple[str, str | None]:
        """Return the image ID that ``text`` names, and the full name it matched (None
        when it matched an ID or an ID prefix). Names win over ID prefixes, as in docker."""
        if is_image_id(text):
            image_id = "sha256:" + text.removeprefix("sha256:")
            if self.metadata.image(image_id) is not None:
                return image_id, None
            raise NotFound(f"No such image: {text}")

        id_prefix = _ID_PREFIX.fullmatch(text)
        reference: Reference | None = None
        if not text.startswith("sha256:"):
            try:
                reference = parse_normalized(text)
            except InvalidArgument:
                if id_prefix is None:
                    raise
        if reference is not None:
            full_name = _full_name_of(reference)
            image_id = self.metadata.image_id_for_name(full_name)
            if image_id is not None:
                return image_id, full_name

        if id_prefix is not None:
            matches = self.metadata.image_ids_with_prefix(id_prefix.group(1))
            if len(matches) == 1:
                return matches[0], None
        display = _familiar(_full_name_of(reference)) if reference else text
        raise NotFound(f"No such image: {display}")

    def _load(self, image_id: str, record: ImageRecord | None = None) -> Image:
        record = record or self.metadata.image(image_id)
        if record is None:
            raise NotFound(f"No such image: {image_id}")
        names = self.metadata.names(image_id)
        config = self._config(image_id)
        return Image(
            id=image_id,
            repo_tags=[_familiar(name) for name, kind in names if kind == "tag"],
            repo_digests=[_familiar(name) for name, kind in names if kind == "digest"],
            created=record.created,
            size=record.size,
            config=dict(config.get("config") or {}),
            architecture=record.architecture,
            os=record.os,
            diff_ids=[layer.diff_id for layer in self.metadata.layers(image_id)],
            comment=str(config.get("comment") or ""),
            author=str(config.get("author") or ""),
        )

    def _config(self, image_id: str) -> dict[str, Any]:
        if image_id not in self._configs:
            self._configs[image_id] = json.loads(self.content.read(image_id))
        return self._configs[image_id]

    def _delete_image(self, image_id: str) -> None:
        blobs = self.metadata.blobs(image_id)
        chains = [layer.chain_id for layer in self.metadata.layers(image_id)]
        self.metadata.remove_image(image_id)
        self._configs.pop(image_id, None)
        self._collect_garbage(blobs, chains)
        log.info("deleted image %s", image_id)

    def _collect_garbage(self, blobs: list[str], chains: list[str]) -> None:
        """Delete the given blobs and snapshots unless an image or a pull still uses them.

        ``chains`` is bottom first; snapshots are removed top first, so a parent goes only
        after its children.
        """
        # Limitation: removing a large snapshot runs on the calling (event loop) thread.
        for chain_id in reversed(chains):
            if chain_id in self.leases or self.metadata.chain_in_use(chain_id):
                continue
            try:
                self.snapshots.remove(chain_id)
            except Conflict as error:
                log.debug("keeping snapshot %s: %s", chain_id, error)
        for digest in blobs:
            if digest in self.leases or self.metadata.blob_in_use(digest):
                continue
            self.content.delete(digest)


def _full_name_of(reference: Reference) -> str:
    if reference.digest:
        return f"{reference.name}@{reference.digest}"
    return f"{reference.name}:{reference.tag or DEFAULT_TAG}"


def _familiar(full_name: str) -> str:
    return str(parse_normalized(full_name).familiar())


def _repository(full_name: str) -> str:
    return parse_normalized(full_name).name
