import pytest

from tfdeeplab.atomic import atomic_output, atomic_write_bytes


def test_atomic_write_replaces_the_target_whole(tmp_path):
    target = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_output(target, suffix=".keras") as temporary:
            assert temporary.suffix == ".keras" and temporary.parent == tmp_path
            temporary.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
