"""Layer sharing between images, for ``GET /system/df`` and ``shared-size`` listings.

Images built on a common base reference the same layers (snapshots named by chain ID),
so adding up each image's size counts a shared layer once per image. Like dockerd, the
total here counts each layer once, and an image's ``SharedSize`` is the bytes of its
layers that at least one other image also references.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSize:
    """One layer of an image: its chain ID and its unpacked size in bytes."""

    chain_id: str
    size: int


@dataclass(frozen=True)
class LayerUsage:
    """Layer totals over a set of images."""

    layers_size: int  # bytes of all distinct layers, each counted once
    shared_sizes: dict[str, int]  # image ID -> bytes of its layers other images also use


def summarize_layers(layers_by_image: Mapping[str, Sequence[LayerSize]]) -> LayerUsage:
    """Count each distinct layer once and find the shared bytes of every image."""
    sizes: dict[str, int] = {}
    references: Counter[str] = Counter()
    for layers in layers_by_image.values():
        # A chain ID names a whole stack, so one image cannot list it twice.
        for layer in layers:
            sizes[layer.chain_id] = layer.size
            references[layer.chain_id] += 1

    shared_sizes = {
        image_id: sum(layer.size for layer in layers if references[layer.chain_id] > 1)
        for image_id, layers in layers_by_image.items()
    }
    return LayerUsage(layers_size=sum(sizes.values()), shared_sizes=shared_sizes)
