from __future__ import annotations

from pathlib import Path

import pytest

from services.artifacts.store import ArtifactCorrupted, ArtifactNotFound, ArtifactStore, digest


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(b"hello")
    assert ref == digest(b"hello")
    assert store.put_bytes(b"hello") == ref
    assert store.get_bytes(ref) == b"hello"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [ref]


def test_json_has_one_address_whatever_the_key_order(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.put_json({"a": 1, "b": [2]}) == store.put_json({"b": [2], "a": 1})


def test_corruption_and_absence_are_reported(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(b"result")
    store.path_of(ref).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted):
        store.get_bytes(ref)
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("0" * 64)


async def test_async_wrappers_round_trip(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = await store.aput_json({"x": 1})
    assert await store.aget_json(ref) == {"x": 1}
