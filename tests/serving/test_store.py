from __future__ import annotations

import pytest

from serving.store import ArtefactStore


def test_content_addressed_and_idempotent(tmp_path):
    store = ArtefactStore(tmp_path)
    key = store.put(b"mask bytes", kind="masks", suffix=".png")
    assert key.startswith("masks/") and key.endswith(".png")
    assert store.put(b"mask bytes", kind="masks", suffix=".png") == key
    assert store.get(key) == b"mask bytes"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [key.split("/")[-1]]


@pytest.mark.parametrize(
    "key",
    [
        "../secret.txt",
        "masks/../../etc/passwd",
        "/etc/passwd",
        "masks/ab/" + "0" * 63 + "/..",
        "images/zz/" + "0" * 64,
        "uploads/ab/" + "a" * 64,
    ],
)
def test_only_store_keys_resolve(tmp_path, key):
    (tmp_path / "secret.txt").write_text("no")
    store = ArtefactStore(tmp_path / "store")
    with pytest.raises(KeyError):
        store.path(key)
    assert not store.exists(key)


def test_rejects_odd_kinds(tmp_path):
    with pytest.raises(ValueError):
        ArtefactStore(tmp_path).put(b"x", kind="../x")
