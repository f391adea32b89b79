"""Atomic outputs follow the process umask, so group members of a shared filesystem read them."""

from __future__ import annotations

import os
import stat

import pytest

from workflow_scripts.files import atomic_dir, atomic_file, write_json


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=oct)
def umask(request):
    """Run the test under this umask, then restore the previous one."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_file_is_created_with_the_umask_mode(umask, tmp_path):
    with atomic_file(tmp_path / "a.txt") as handle:
        handle.write("x")
    write_json(tmp_path / "b.json", {"a": 1})
    assert mode(tmp_path / "a.txt") == 0o666 & ~umask  # 0o644 under 0o022, 0o664 under 0o002
    assert mode(tmp_path / "b.json") == 0o666 & ~umask


def test_atomic_dir_is_created_with_the_umask_mode(umask, tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("1")
        (tmp / "sub").mkdir()
    assert mode(tmp_path / "out") == 0o777 & ~umask  # 0o755 under 0o022, 0o775 under 0o002
    assert mode(tmp_path / "out/sub") == 0o777 & ~umask
    assert mode(tmp_path / "out/x") == 0o666 & ~umask


def test_a_widened_model_does_not_inherit_a_read_only_source(demo_assets, tmp_path):
    """A shared mirror may be read-only (0o555 / 0o444); the widened copy is ours to write."""
    import shutil

    from workflow_scripts.model.widen import widen

    source = tmp_path / "mirror"
    shutil.copytree(demo_assets / "base-model", source)
    for path in sorted(source.rglob("*"), reverse=True) + [source]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    previous = os.umask(0o002)
    try:
        widen(source=source, out_dir=tmp_path / "widened", verify_path=tmp_path / "verify.json", to=128)
    finally:
        os.umask(previous)
        for path in [source, *source.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    out = tmp_path / "widened"
    assert mode(out) == 0o775
    assert {mode(p) for p in out.rglob("*") if p.is_dir()} == {0o775}
    assert {mode(p) for p in out.rglob("*") if p.is_file()} == {0o664}


def test_safetensors_written_into_an_atomic_dir_follow_the_umask(umask, tmp_path):
    """safetensors' save_file (model.save, widen) creates 0o600 files whatever the umask."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(tmp_path / "model") as tmp:
        save_file({"w": torch.zeros(2)}, tmp / "model.safetensors")
    assert mode(tmp_path / "model/model.safetensors") == 0o666 & ~umask
