"""The source of a pull: the first registry endpoint that has the manifest.

For ``docker.io`` names the configured mirrors are tried in order, and ketch does not fall
back to Docker Hub when every mirror fails (see ``ketch.images.endpoints.endpoints_for``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ketch.errors import Forbidden, NotFound, Unavailable
from ketch.images.auth import Credentials, CredentialStore
from ketch.images.endpoints import endpoints_for
from ketch.images.http_client import Session
from ketch.images.reference import Reference
from ketch.images.registry import FetchedManifest, RegistryClient, credentials_for

log = logging.getLogger(__name__)


async def find_manifest(
    session: Session,
    reference: Reference,
    mirrors: Sequence[str],
    insecure_registries: Sequence[str],
    auth: Credentials | None,
    credentials: CredentialStore | None,
) -> tuple[RegistryClient, FetchedManifest]:
    """Fetch the manifest from the first endpoint that has it (mirrors in order) and return
    a client for that endpoint with it. ``auth`` are credentials for this pull only. Without
    them, the ones in ``credentials`` for each endpoint's host are used."""
    endpoints = endpoints_for(reference.domain, mirrors, insecure_registries)
    target = reference.digest or reference.tag or "latest"
    for number, endpoint in enumerate(endpoints, start=1):
        client = RegistryClient(
            session,
            endpoint,
            reference.path,
            display_name=reference.familiar_name,
            credentials=auth or credentials_for(credentials, endpoint),
        )
        try:
            fetched = await client.get_manifest(target, reference.familiar())
        except (NotFound, Unavailable, Forbidden) as error:
            if number == len(endpoints) and endpoint.is_mirror and isinstance(error, NotFound):
                mirror_urls = ", ".join(mirrors)
                raise NotFound(
                    f"{error} (looked up in the docker.io mirrors {mirror_urls}; ketch does not "
                    "fall back to Docker Hub when mirrors are configured)"
                ) from error
            if number == len(endpoints):
                raise
            log.warning(
                "pulling %s from %s failed, trying the next mirror: %s",
                reference.familiar(), endpoint.name, error,
            )  # fmt: skip
            continue
        log.info("pulling %s from %s (%s)", reference.familiar(), endpoint.name, fetched.digest)
        return client, fetched
    raise AssertionError("endpoints_for returned no endpoint")
