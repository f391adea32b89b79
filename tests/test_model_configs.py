"""Every config.json the demo and the pipeline write has the shape strict loaders accept (issue #26).

transformers 5.3 (pinned) loads a ModernBERT config whose ``rope_parameters`` mixes per-layer-type
entries with top-level ``rope_theta: null, rope_type`` keys, warning "Unrecognized keys"; the
transformers that sentence-transformers 6 installs refuses it. These tests load each written
``config.json`` with transformers' own validation (:func:`workflow_scripts.synthetic.backbone.config_problems`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from transformers import ModernBertConfig, ModernBertModel

from workflow_scripts.errors import UserError
from workflow_scripts.lineage import Lineage
from workflow_scripts.model.widen import widen
from workflow_scripts.synthetic import rehearsal
from workflow_scripts.synthetic.backbone import check_config, config_problems
from workflow_scripts.synthetic.demo import DEMO_BACKBONE


def demo_config() -> dict:
    """config.yaml with demo/config.yaml merged in, as ``--configfile demo/config.yaml`` does."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "demo" / "config.yaml").read_text()))
    return config


def test_the_check_refuses_the_mixed_rope_shape(tmp_path):
    # What the demo generator wrote before #26: every layer full_attention, so transformers 5.3
    # saves a sliding_attention entry next to top-level rope_theta null / rope_type.
    config = ModernBertConfig(num_hidden_layers=2, global_attn_every_n_layers=1)
    config.save_pretrained(tmp_path)
    rope = json.loads((tmp_path / "config.json").read_text())["rope_parameters"]
    assert {"rope_theta", "rope_type"} <= set(rope), "transformers no longer writes the mixed shape"
    problems = config_problems(tmp_path)
    assert any("not layer types" in p for p in problems)
    assert any("Unrecognized keys in `rope_parameters`" in p for p in problems)  # transformers' own warning
    with pytest.raises(UserError) as err:
        check_config(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value) and "\n" not in str(err.value)


def test_the_check_refuses_stray_top_level_rope_keys(tmp_path):
    ModernBertConfig(num_hidden_layers=3).save_pretrained(tmp_path)  # full + sliding: clean
    assert config_problems(tmp_path) == []
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["rope_parameters"] |= {"rope_theta": None, "rope_type": "default"}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert config_problems(tmp_path)


def test_the_check_names_an_unreadable_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "modernbert",')
    assert config_problems(tmp_path)[0].startswith("unreadable")


def test_demo_base_model_config_is_clean(demo_assets):
    base = demo_assets / "base-model"
    assert config_problems(base) == []
    raw = json.loads((base / "config.json").read_text())
    # rope values are the ones the demo always had: 160000 in every layer
    assert {t: p["rope_theta"] for t, p in raw["rope_parameters"].items()} == {
        "full_attention": DEMO_BACKBONE["global_rope_theta"],
        "sliding_attention": DEMO_BACKBONE["local_rope_theta"],
    }


def test_demo_backbone_computes_full_attention(demo_assets):
    """The local layer's window covers every position: the same numbers as an all-global backbone."""
    base = demo_assets / "base-model"
    model = ModernBertModel.from_pretrained(base).eval()
    config = copy.deepcopy(model.config)
    assert config.layer_types == ["full_attention", "sliding_attention"]
    assert 2 * config.sliding_window >= config.max_position_embeddings
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    all_global = ModernBertModel(config).eval()
    all_global.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (3, config.max_position_embeddings - 1), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 200:], mask[2, 17:] = 0, 0  # padded rows too
    with torch.no_grad():
        local = model(input_ids=ids, attention_mask=mask).last_hidden_state
        full = all_global(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(local, full)


def test_widened_demo_model_config_is_clean(demo_assets, tmp_path):
    widen(source=demo_assets / "base-model", out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128)
    assert config_problems(tmp_path / "w") == []


@pytest.fixture(scope="module")
def rehearsal_base(tmp_path_factory) -> Path:
    """The rehearsal's base model (full size) on a small tokenizer corpus."""
    root = tmp_path_factory.mktemp("rehearsal") / "base-model"
    rehearsal.write_base_model(root, rehearsal.build_tokenizer(rehearsal.make_lexicon(2000, seed=0)), seed=0)
    return root


def test_rehearsal_configs_are_clean(rehearsal_base, tmp_path):
    assert config_problems(rehearsal_base) == []
    widen(source=rehearsal_base, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128)
    assert config_problems(tmp_path / "w") == []
    raw = json.loads((rehearsal_base / "config.json").read_text())
    expected = {"full_attention": rehearsal.ETTIN_32M["global_rope_theta"]}
    expected["sliding_attention"] = rehearsal.ETTIN_32M["local_rope_theta"]
    assert {t: p["rope_theta"] for t, p in raw["rope_parameters"].items()} == expected


@pytest.mark.e2e
def test_every_config_json_of_a_finished_demo_is_clean(demo_run):
    """Base model, widened, stage 1 and 2 (and any checkpoint left): every PyLate folder the run wrote."""
    config = demo_config()
    run = demo_run / "results" / config["run_name"]
    base = demo_run / config["sources"]["base_model"]["local"]
    expected = {base} | {run / "models" / model for model in Lineage(config).models}
    written = {p.parent for root in (demo_run / "results", demo_run / "resources") for p in root.rglob("modules.json")}
    assert expected <= written
    problems = {str(folder): config_problems(folder) for folder in sorted(written)}
    assert problems == {folder: [] for folder in problems}
