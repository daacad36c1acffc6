"""Atomic files and digests."""

import pytest

from ssl_mae_plugin.storage import atomic_path, digest, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "report.json", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as partial:
        partial.write_text("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new"


def test_the_partial_file_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "figure.png") as partial:
        assert partial.suffix == ".png" and partial.parent == tmp_path
        partial.write_bytes(b"png")
    assert (tmp_path / "figure.png").read_bytes() == b"png"


def test_digest_ignores_key_order_and_follows_values():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert len(digest(None)) == 64
