"""Untrusted and broken checkpoints, and a full disk: refused or reported as one line naming the file."""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess

import pytest
import torch
from safetensors import SafetensorError

from workflow_scripts.cli import run_cli
from workflow_scripts.errors import UserError
from workflow_scripts.files import atomic_dir, write_json
from workflow_scripts.model.load import load_colbert

# a module that leaves a marker file when imported
EVIL = "import pathlib, torch\npathlib.Path({marker!r}).write_text('ran')\nclass Module(torch.nn.Module):\n    pass\n"


@pytest.fixture()
def ckpt(demo_assets, tmp_path):
    return shutil.copytree(demo_assets / "base-model", tmp_path / "ckpt")


def refused(ckpt, match: str) -> None:
    """``load_colbert`` raises a one-line UserError matching ``match``."""
    with pytest.raises(UserError, match=match) as err:
        load_colbert(ckpt)
    assert "\n" not in str(err.value)


def edit_json(file, change) -> None:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


# --------------------------------------------------------------------------- code it ships
def test_module_shipped_in_checkpoint_is_never_imported(ckpt, tmp_path):
    marker = tmp_path / "imported"
    (ckpt / "evil.py").write_text(EVIL.format(marker=str(marker)))
    edit_json(ckpt / "modules.json", lambda m: m.append({"idx": 4, "name": "4", "path": "", "type": "evil.Module"}))
    try:
        refused(ckpt, r"(modules\.json: module type 'evil\.Module'|evil\.py: checkpoint ships code)")
    finally:
        assert not marker.exists(), "the checkpoint's own evil.py was imported"
    from workflow_scripts.model.checkpoint import check_untrusted_checkpoint

    check_untrusted_checkpoint(ckpt, trust_remote_code=True)  # trusted: not refused
    assert not marker.exists()  # and the check itself imports nothing


@pytest.mark.parametrize(
    "kind", ["evil.Module", "org/repo--evil.Module", "json.JSONDecoder", "sentence_transformers.models.Router"]
)
def test_importable_module_types_are_refused(ckpt, kind):
    edit_json(ckpt / "modules.json", lambda m: m.__setitem__(1, {**m[1], "type": kind}))
    refused(ckpt, f"modules.json: module type '{re.escape(kind)}' is not")


def test_dense_activation_is_not_imported(ckpt, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "imported"
    (site / "evil_act.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(site))  # any importable module, not only one the checkpoint ships
    edit_json(ckpt / "1_Dense/config.json", lambda c: c.update(activation_function="evil_act.Module"))
    refused(ckpt, r"1_Dense/config\.json: activation_function 'evil_act\.Module' is not")
    assert not marker.exists()


@pytest.mark.parametrize("where", ["tokenizer_config.json", "1_Dense/config.json", "config.json"])
def test_auto_map_in_any_config_is_refused(ckpt, where):
    edit_json(ckpt / where, lambda c: c.update(auto_map={"AutoModel": "modeling_evil.EvilModel"}))
    refused(ckpt, f"{re.escape(str(ckpt / where))}: model needs remote code")


def test_shipped_python_is_refused(ckpt):
    (ckpt / "2_Dense/helper.py").write_text("print('hi')\n")
    refused(ckpt, r"2_Dense/helper\.py: checkpoint ships code")


def test_loader_args_read_from_files_are_refused(ckpt):
    edit_json(ckpt / "sentence_bert_config.json", lambda c: c.update(model_args={"use_kernels": True}))
    refused(ckpt, r"sentence_bert_config\.json: sets model_args")


# --------------------------------------------------------------------------- broken files
@pytest.mark.parametrize("name", ["model.safetensors", "3_Dense/model.safetensors"])
def test_truncated_safetensors_is_named(ckpt, name):
    data = (ckpt / name).read_bytes()
    (ckpt / name).write_bytes(data[: len(data) - 100])
    refused(ckpt, f"{re.escape(str(ckpt / name))}: truncated or corrupt safetensors")


def test_missing_tokenizer_is_named(ckpt):
    (ckpt / "tokenizer.json").unlink()
    refused(ckpt, f"{re.escape(str(ckpt / 'tokenizer.json'))}: file not found")


@pytest.mark.parametrize(
    "name, text",
    [
        ("config.json", None),
        ("config.json", '{"model_type": '),
        ("modules.json", None),
        ("modules.json", "[{"),
        ("modules.json", '{"type": "x"}'),
        ("2_Dense/config.json", None),
        ("3_Dense/model.safetensors", None),
    ],
)
def test_missing_or_malformed_file_is_named(ckpt, name, text):
    if text is None:
        (ckpt / name).unlink()
    else:
        (ckpt / name).write_text(text)
    refused(ckpt, f"^{re.escape(str(ckpt / name))}: ")


# --------------------------------------------------------------------------- disk full
def cli_error(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, [])
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),  # write()/close(): no file name
        RuntimeError("basic_ios::clear: iostream error"),  # torch.save, a small tensor
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # a larger one
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],  # model.save
    ids=["oserror", "torch-basic_ios", "torch-pos", "safetensors"],
)
def test_a_failed_write_names_the_output(tmp_path, capsys, failure):
    def main(argv):
        with atomic_dir(tmp_path / "model"):
            raise failure

    err = cli_error(main, capsys)
    assert err.startswith(f"error: {tmp_path / 'model'}: No space left on device") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_a_failed_write_outside_an_output_is_one_line(capsys):
    def main(argv):
        raise RuntimeError("basic_ios::clear: iostream error")

    assert cli_error(main, capsys) == "error: No space left on device (torch: write failed)\n"


@pytest.fixture()
def full_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount rights; skipped without them)."""
    where = tmp_path / "full"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", "--lazy", str(where)], check=True)  # a failed writer may still hold a file open


def test_outputs_on_a_full_disk_name_the_path(ckpt, full_disk, capsys):
    model = load_colbert(ckpt)
    capsys.readouterr()  # the load's progress bars

    def write_result(argv):
        write_json(full_disk / "eval.json", {"scores": [0.5] * 100_000})  # OSError(ENOSPC), no file name

    def save_model(argv):
        with atomic_dir(full_disk / "model") as tmp:
            model.save(str(tmp))  # SafetensorError: "... No space left on device (os error 28)"

    def save_optimizer(argv):
        with atomic_dir(full_disk / "checkpoint-1") as tmp:
            torch.save({"w": torch.zeros(100_000)}, tmp / "optimizer.pt")  # RuntimeError: unexpected pos

    assert cli_error(write_result, capsys) == f"error: {full_disk / 'eval.json'}: No space left on device\n"
    assert cli_error(save_model, capsys).splitlines()[-1] == f"error: {full_disk / 'model'}: No space left on device"
    err = cli_error(save_optimizer, capsys)
    assert err.startswith(f"error: {full_disk / 'checkpoint-1'}: No space left on device") and err.count("\n") == 1
    assert not list(full_disk.iterdir())  # no half-written output left behind


# --------------------------------------------------------------------------- issue 25: security
def _outside_dense(ckpt, tmp_path, marker, monkeypatch):
    """A copy of the checkpoint's 1_Dense outside it, whose config names an importable module."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "evil_act.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(site))
    outside = shutil.copytree(ckpt / "1_Dense", tmp_path / "elsewhere" / "x")
    edit_json(outside / "config.json", lambda c: c.update(activation_function="evil_act.Module"))
    return outside


def _module_path_up(ckpt, outside):
    edit_json(ckpt / "modules.json", lambda m: m[1].update(path="../elsewhere/x"))


def _module_path_absolute(ckpt, outside):
    edit_json(ckpt / "modules.json", lambda m: m[1].update(path=str(outside)))


def _symlinked_module_folder(ckpt, outside):
    shutil.rmtree(ckpt / "1_Dense")
    (ckpt / "1_Dense").symlink_to(outside, target_is_directory=True)


def _symlinked_config_file(ckpt, outside):
    (ckpt / "1_Dense/config.json").unlink()
    (ckpt / "1_Dense/config.json").symlink_to(outside / "config.json")


def _symlinked_weights(ckpt, outside):
    (ckpt / "model.safetensors").rename(outside / "transformer.safetensors")
    (ckpt / "model.safetensors").symlink_to(outside / "transformer.safetensors")


def _nested_file_key(ckpt, outside):
    edit_json(ckpt / "tokenizer_config.json", lambda c: c.update(extra={"tokenizer_file": str(outside)}))


def _tokenizer_elsewhere(ckpt, outside):
    edit_json(ckpt / "sentence_bert_config.json", lambda c: c.update(tokenizer_name_or_path="../elsewhere"))


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize(
    "escape",
    [
        _module_path_up,
        _module_path_absolute,
        _symlinked_module_folder,
        _symlinked_config_file,
        _symlinked_weights,
        _nested_file_key,
        _tokenizer_elsewhere,
    ],
)
def test_security_checkpoint_paths_stay_inside(ckpt, tmp_path, monkeypatch, escape, trust):
    """Whatever a checkpoint names (module paths, symlinks, file keys at any depth) resolves inside it,
    trusted or not: nothing outside is read, imported or run."""
    marker = tmp_path / "imported"
    outside = _outside_dense(ckpt, tmp_path, marker, monkeypatch)
    escape(ckpt, outside)
    with pytest.raises(UserError, match=r"outside the checkpoint|names a file") as err:
        load_colbert(ckpt, trust_remote_code=trust)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(ckpt))
    assert not marker.exists(), "a module named by a config outside the checkpoint was imported"


@pytest.mark.parametrize(
    "where, change, names",
    [
        ("1_Dense/config.json", {"activation_function": "torch.nn.modules.linear.Linear"}, "activation_function"),
        (
            "1_Dense/config.json",
            {"activation_function": "torch.nn.modules.transformer.Transformer"},
            "activation_function",
        ),
        (
            "2_Dense/config.json",
            {"activation_function": "torch.nn.modules.container.Sequential"},
            "activation_function",
        ),
        ("config.json", {"text_config": {"auto_map": {"AutoModel": "evil.Model"}}}, "text_config/auto_map"),
        ("tokenizer_config.json", {"x": [{"auto_map": ["evil.Tokenizer", None]}]}, "x/auto_map"),
        ("sentence_bert_config.json", {"model_name_or_path": "evil/model"}, "model_name_or_path"),
        ("sentence_bert_config.json", {"cache_folder": "x"}, "unknown key"),
        ("3_Dense/config.json", {"init_weight": [1.0]}, "unknown key"),
    ],
)
def test_security_config_imports_are_allow_listed(ckpt, where, change, names):
    """A name a config turns into an import or a loader argument is on an allow-list, checked before any load:
    a torch.nn class that is not an activation, auto_map at any depth, a key the module would pass on."""
    edit_json(ckpt / where, lambda c: c.update(change))
    with pytest.raises(UserError) as err:
        load_colbert(ckpt)
    assert str(err.value).startswith(f"{ckpt / where}: ") and names in str(err.value) and "\n" not in str(err.value)


def test_security_allowed_activations_load(ckpt):
    """The allow-list keeps what sentence-transformers and PyLate write (their full class names)."""
    from workflow_scripts.model.checkpoint import ACTIVATIONS

    edit_json(ckpt / "1_Dense/config.json", lambda c: c.update(activation_function="torch.nn.modules.activation.Tanh"))
    model = load_colbert(ckpt)
    assert type(model[1].activation_function).__name__ == "Tanh"
    assert {"torch.nn.modules.linear.Identity", "torch.nn.Identity"} <= ACTIVATIONS


# --------------------------------------------------------------------------- issue 25: late or loud
@pytest.mark.parametrize(
    "where, change",
    [
        ("1_Dense/config.json", {"in_features": 32}),
        ("2_Dense/config.json", {"out_features": 96}),
        ("3_Dense/config.json", {"bias": True}),
        ("1_Dense/config.json", {"use_residual": True}),
        ("3_Dense/config.json", {"out_features": 0}),
    ],
)
def test_late_or_loud_dense_shapes_match_their_config(ckpt, where, change):
    """A Dense whose config disagrees with its weights, or with the width before it: one line naming the
    file, before the load (not a `size mismatch` traceback naming none)."""
    edit_json(ckpt / where, lambda c: c.update(change))
    with pytest.raises(UserError) as err:
        load_colbert(ckpt)
    message = str(err.value)
    assert "\n" not in message and str(ckpt / where.split("/")[0]) in message.split(":")[0], message


def test_late_or_loud_dense_weights_of_another_shape(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(ckpt / "3_Dense/model.safetensors")
    save_file({k: v[: v.shape[0] // 2].contiguous() for k, v in state.items()}, ckpt / "3_Dense/model.safetensors")
    refused(ckpt, f"^{re.escape(str(ckpt / '3_Dense/model.safetensors'))}: holds linear.weight ")
