"""Layer totals for ``GET /system/df``: each shared layer counted once."""

from __future__ import annotations

from ketch.engine.layer_usage import LayerSize, summarize_layers

BASE = LayerSize("sha256:base", 1000)
COMMIT = LayerSize("sha256:commit", 30)
OTHER = LayerSize("sha256:other", 500)


def test_layers_size_counts_shared_once() -> None:
    usage = summarize_layers({"busybox": [BASE], "derived": [BASE, COMMIT]})
    assert usage.layers_size == 1030


def test_shared_size_of_base_image() -> None:
    usage = summarize_layers({"busybox": [BASE], "derived": [BASE, COMMIT]})
    assert usage.shared_sizes["busybox"] == 1000


def test_shared_size_skips_own_layers() -> None:
    usage = summarize_layers({"busybox": [BASE], "derived": [BASE, COMMIT]})
    assert usage.shared_sizes["derived"] == 1000


def test_unrelated_images_share_nothing() -> None:
    usage = summarize_layers({"busybox": [BASE], "other": [OTHER]})
    assert usage.shared_sizes == {"busybox": 0, "other": 0}
    assert usage.layers_size == 1500


def test_no_images_no_layers() -> None:
    usage = summarize_layers({})
    assert usage.layers_size == 0
    assert usage.shared_sizes == {}
