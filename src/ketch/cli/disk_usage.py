"""The verbose tables of ``ketch system df -v``: one row per image, container, local volume
and build cache record of a ``GET /system/df`` reply, laid out as docker's CLI lays them out.
"""

from __future__ import annotations

import time
from datetime import datetime

from ketch.cli.formatter import render
from ketch.cli.humanize import human_duration, human_size
from ketch.cli.images import HEADERS as IMAGE_HEADERS
from ketch.cli.images import image_rows
from ketch.cli.ps import HEADERS as CONTAINER_HEADERS
from ketch.cli.ps import ContainerRow, HeaderRow, short_id
from ketch.cli.volume import HEADERS as VOLUME_HEADERS
from ketch.cli.volume import VolumeRow

IMAGE_TABLE = (
    "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}"
    "\t{{.UniqueSize}}\t{{.Containers}}"
)
CONTAINER_TABLE = (
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}"
    "\t{{.Status}}\t{{.Names}}"
)
VOLUME_TABLE = "{{.Name}}\t{{.Links}}\t{{.Size}}"
CACHE_TABLE = (
    "{{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t{{.LastUsedSince}}"
    "\t{{.UsageCount}}\t{{.Shared}}"
)
CACHE_HEADERS = {
    "ID": "CACHE ID",
    "CacheType": "CACHE TYPE",
    "Size": "SIZE",
    "CreatedSince": "CREATED",
    "LastUsedSince": "LAST USED",
    "UsageCount": "USAGE",
    "Shared": "SHARED",
}


def verbose_report(data: dict, now: float | None = None) -> str:
    """Format the four space usage tables of a ``GET /system/df`` reply."""
    now = time.time() if now is None else now
    # Docker shows one row per image, named after its first tag only.
    images = [image_rows(image, now)[0] for image in data.get("Images") or []]
    containers = [ContainerRow(container, now) for container in data.get("Containers") or []]
    volumes = [VolumeRow(volume) for volume in data.get("Volumes") or []]
    cache = data.get("BuildCache") or []
    cache_size = sum(record.get("Size") or 0 for record in cache)
    sections = [
        "Images space usage:\n\n" + render("", IMAGE_TABLE, HeaderRow(IMAGE_HEADERS), images),
        "Containers space usage:\n\n"
        + render("", CONTAINER_TABLE, HeaderRow(CONTAINER_HEADERS), containers),
        "Local Volumes space usage:\n\n"
        + render("", VOLUME_TABLE, HeaderRow(VOLUME_HEADERS), volumes),
        f"Build cache usage: {human_size(cache_size)}\n\n"
        + render("", CACHE_TABLE, HeaderRow(CACHE_HEADERS), [CacheRow(r, now) for r in cache]),
    ]
    return "\n".join(sections)


class CacheRow:
    """One build cache record of a ``GET /system/df`` reply."""

    def __init__(self, record: dict, now: float) -> None:
        self._record = record
        self._now = now

    @property
    def ID(self) -> str:  # noqa: N802 - the field names are docker's template names
        return short_id(self._record.get("ID") or "")

    @property
    def CacheType(self) -> str:  # noqa: N802
        return self._record.get("Type") or ""

    @property
    def Size(self) -> str:  # noqa: N802
        return human_size(self._record.get("Size") or 0)

    @property
    def CreatedSince(self) -> str:  # noqa: N802
        return self._since(self._record.get("CreatedAt"))

    @property
    def LastUsedSince(self) -> str:  # noqa: N802
        return self._since(self._record.get("LastUsedAt"))

    @property
    def UsageCount(self) -> str:  # noqa: N802
        return str(self._record.get("UsageCount") or 0)

    @property
    def Shared(self) -> str:  # noqa: N802
        return "true" if self._record.get("Shared") else "false"

    def _since(self, timestamp: object) -> str:
        # The Engine API sends these times as RFC 3339 strings.
        try:
            seconds = datetime.fromisoformat(str(timestamp)).timestamp()
        except ValueError:
            return ""
        return f"{human_duration(self._now - seconds)} ago"

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in sorted(CACHE_HEADERS)}
