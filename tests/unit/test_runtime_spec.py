"""The default config, as runc spec writes it."""

from __future__ import annotations

from ketch.runtime.spec import default_spec


def test_default_args_sh():
    assert default_spec()["process"]["args"] == ["sh"]


def test_args_replaced():
    assert default_spec(["echo", "hi"])["process"]["args"] == ["echo", "hi"]


def test_copies_independent():
    first = default_spec()
    first["mounts"].clear()
    assert default_spec()["mounts"] != []


def test_runc_fields():
    spec = default_spec()
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["process"]["terminal"] is True
    assert [m["destination"] for m in spec["mounts"]][:2] == ["/proc", "/dev"]
