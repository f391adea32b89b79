"""Code fingerprints: a stage reruns when a module it imports changes, and only then."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO

from workflow_scripts.fingerprint import NOT_RESULT_BEARING, code_fingerprint, imported_modules, module_file

STAGES = ["data", "synthetic.demo", "model.widen", "train.stage", "evaluate.job", "summarize", "report"]


@pytest.fixture()
def package(tmp_path):
    return shutil.copytree(REPO / "workflow_scripts", tmp_path / "workflow_scripts")


def fingerprints(root):
    return {stage: code_fingerprint(stage, root=root) for stage in STAGES}


def modules(stage):
    return set(code_fingerprint(stage).split(":")[0].split("+"))


def test_each_stage_covers_what_it_imports_transitively():
    assert {"evaluate", "evaluate.job", "model", "model.load", "errors", "files"} <= modules("evaluate.job")
    assert {"train", "train.stage", "model.load", "errors", "files"} <= modules("train.stage")
    assert "model.load" not in modules("report") and "model.load" not in modules("data")
    assert "train.stage" not in modules("evaluate.job") and "model.widen" not in modules("evaluate.job")


def test_an_edit_inside_load_colbert_changes_exactly_its_importers(package):
    before = fingerprints(package)
    model = package / "model" / "load.py"
    model.write_text(
        model.read_text().replace("    from pylate import models\n", "    from pylate import models\n    _ = 0\n", 1)
    )
    after = fingerprints(package)
    changed = {stage for stage in STAGES if before[stage] != after[stage]}
    assert (
        changed
        == {stage for stage in STAGES if "model.load" in modules(stage)}
        >= {"model.widen", "train.stage", "evaluate.job"}
    )


def test_comments_docstrings_and_blank_lines_change_nothing(package):
    before = fingerprints(package)
    model = package / "model" / "load.py"
    text = model.read_text().replace('"""Loading a ColBERT', '"""Other words. Loading a ColBERT', 1)
    text = text.replace("    from pylate import models\n", "    from pylate import models  # why\n\n", 1)
    model.write_text(text + "\n# trailing comment\n")
    assert fingerprints(package) == before


def test_the_fingerprint_holds_no_path(package, tmp_path):
    moved = shutil.copytree(package, tmp_path / "elsewhere" / "workflow_scripts")
    assert fingerprints(moved) == fingerprints(package) == fingerprints(REPO / "workflow_scripts")
    assert str(tmp_path) not in "".join(fingerprints(package).values())


def test_extra_files_count(package):
    before = code_fingerprint("train.stage", "launch.sh", root=package)
    (package / "launch.sh").write_text((package / "launch.sh").read_text() + "\necho changed\n")
    assert code_fingerprint("train.stage", "launch.sh", root=package) != before


@pytest.fixture()
def subpackages(tmp_path):
    """A package with sub-packages, imported every way Python allows."""
    root = tmp_path / "workflow_scripts"
    files = {
        "__init__.py": "",
        "common.py": "X = 1\n",
        "uses_helper.py": "from .sub import helper\n",
        "uses_other.py": "def f():\n    from workflow_scripts.sub.other import g\n",
        "uses_deep.py": "import workflow_scripts.sub.deep.leaf\n",
        "unrelated.py": "import json\n",
        "sub/__init__.py": "",
        "sub/helper.py": "from . import other\n",
        "sub/other.py": "from ..common import X\ndef g():\n    return X\n",
        "sub/deep/__init__.py": "",
        "sub/deep/leaf.py": "from ...common import X\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


SUB_STAGES = ["uses_helper", "uses_other", "uses_deep", "unrelated"]


@pytest.mark.parametrize(
    ("edited", "rerun"),
    [
        ("sub/helper.py", {"uses_helper"}),
        ("sub/other.py", {"uses_helper", "uses_other"}),  # helper imports it: `from . import other`
        ("sub/deep/leaf.py", {"uses_deep"}),
        ("common.py", {"uses_helper", "uses_other", "uses_deep"}),  # reached through `..` and `...`
        ("sub/__init__.py", {"uses_helper", "uses_other", "uses_deep"}),  # runs before any sub module
        ("sub/deep/__init__.py", {"uses_deep"}),
    ],
)
def test_an_edit_in_a_subpackage_module_reruns_its_users_and_only_them(subpackages, edited, rerun):
    before = {stage: code_fingerprint(stage, root=subpackages) for stage in SUB_STAGES}
    path = subpackages / edited
    path.write_text(path.read_text() + "Y = 2\n")
    after = {stage: code_fingerprint(stage, root=subpackages) for stage in SUB_STAGES}
    assert {stage for stage in SUB_STAGES if before[stage] != after[stage]} == rerun


@pytest.mark.parametrize("module", sorted(NOT_RESULT_BEARING))
def test_an_edit_to_a_module_that_cannot_change_a_number_changes_no_fingerprint(package, module):
    """Progress lines, the entry point, the stage registry and the warm start: a code edit reruns nothing."""
    before = fingerprints(package)
    path = module_file(module, package)
    path.write_text(path.read_text() + "\n_EDITED = 1\n")
    assert fingerprints(package) == before


def test_what_the_warm_start_imports_still_counts_where_a_stage_imports_it(package):
    """warm imports job_usage; report reads the cost figures with it, so an edit there reruns the report."""
    assert "job_usage" in imported_modules((package / "warm.py").read_text(), package, module="warm")
    before = fingerprints(package)
    (package / "job_usage.py").write_text((package / "job_usage.py").read_text() + "\n_EDITED = 1\n")
    after = fingerprints(package)
    assert {stage for stage in STAGES if before[stage] != after[stage]} == {"report"}
