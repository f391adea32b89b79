"""widen: invariants of the widened projection and refusals of bad checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from workflow_scripts.errors import UserError
from workflow_scripts.model.load import load_colbert
from workflow_scripts.model.widen import widen


@pytest.fixture()
def base(demo_assets):
    return demo_assets / "base-model"


def test_widen_keeps_old_rows_and_adds_small_random_ones(base, tmp_path):
    report = widen(source=base, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128, seed=3)
    old = load_file(base / "3_Dense/model.safetensors")["linear.weight"]
    new = load_file(tmp_path / "w/3_Dense/model.safetensors")["linear.weight"]
    assert new.shape == (128, old.shape[1])
    assert torch.equal(new[:64], old)  # bit-identical
    target = 0.1 * old.float().std().item()
    assert abs(new[64:].float().std().item() - target) / target < 0.05
    assert json.loads((tmp_path / "w/3_Dense/config.json").read_text())["out_features"] == 128
    assert all(report["checks"].values()) and json.loads((tmp_path / "v.json").read_text())["new_dim"] == 128
    model = load_colbert(tmp_path / "w")
    assert len(model) == 4 and model[-1].out_features == 128  # widened, not a 4th Dense appended
    assert (tmp_path / "w/1_Dense/model.safetensors").read_bytes() == (base / "1_Dense/model.safetensors").read_bytes()


def test_widen_is_seeded(base, tmp_path):
    for name in ("a", "b"):
        widen(source=base, out_dir=tmp_path / name, verify_path=tmp_path / f"{name}.json", to=96, seed=1)
    assert (tmp_path / "a/3_Dense/model.safetensors").read_bytes() == (
        tmp_path / "b/3_Dense/model.safetensors"
    ).read_bytes()


def test_use_residual_override(base, tmp_path):
    widen(source=base, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128, use_residual_2_dense=True)
    assert json.loads((tmp_path / "w/2_Dense/config.json").read_text())["use_residual"] is True
    assert load_colbert(tmp_path / "w")[2].use_residual is True


def test_widening_a_wider_layer_is_refused(base, tmp_path):
    with pytest.raises(UserError, match="already has 64 outputs"):
        widen(source=base, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=64)
    assert not (tmp_path / "w").exists()


def test_checkpoint_without_dense_is_refused(base, tmp_path):
    ckpt = shutil.copytree(base, tmp_path / "nodense")
    modules = [m for m in json.loads((ckpt / "modules.json").read_text()) if not m["type"].endswith("Dense")]
    (ckpt / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match="no Dense layer"):
        widen(source=ckpt, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128)


def test_pickle_weights_are_refused(base, tmp_path):
    ckpt = shutil.copytree(base, tmp_path / "bin")
    (ckpt / "3_Dense/model.safetensors").rename(ckpt / "3_Dense/pytorch_model.bin")
    with pytest.raises(UserError, match="only safetensors"):
        widen(source=ckpt, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128)
    (ckpt / "3_Dense/pytorch_model.bin").rename(ckpt / "2_Dense/pytorch_model.bin")
    (ckpt / "2_Dense/model.safetensors").unlink()
    with pytest.raises(UserError, match="2_Dense: weights only as pytorch_model.bin"):
        load_colbert(ckpt)  # evaluation loads through the same gate


def test_remote_code_is_refused_unless_allowed(base, tmp_path):
    ckpt = shutil.copytree(base, tmp_path / "remote")
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="needs remote code"):
        load_colbert(ckpt)
