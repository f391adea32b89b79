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

from workflow_scripts.common import UserError, atomic_dir, run_cli, write_json
from workflow_scripts.model import load_colbert

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
    from workflow_scripts.checkpoint import check_untrusted_checkpoint

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
    [("config.json", None), ("config.json", '{"model_type": '), ("modules.json", None), ("modules.json", "[{"),
     ("modules.json", '{"type": "x"}'), ("2_Dense/config.json", None), ("3_Dense/model.safetensors", None)],
)  # fmt: skip
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
    [OSError(errno.ENOSPC, "No space left on device"),  # write()/close(): no file name
     RuntimeError("basic_ios::clear: iostream error"),  # torch.save, a small tensor
     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # a larger one
     SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")],  # model.save
    ids=["oserror", "torch-basic_ios", "torch-pos", "safetensors"],
)  # fmt: skip
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
