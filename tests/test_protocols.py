"""The protocol presets against the code they reproduce (mteb, as installed), and their resolution."""

from __future__ import annotations

import inspect

import pytest

from workflow_scripts.bright import meta as bright_meta
from workflow_scripts.bright.protocols import (
    CARD_TEMPLATE,
    MTEB_V1_1_PROMPTS,
    MTEB_V1_1_TASKS,
    PRESETS,
    evaluation_rules,
    job_pairs,
    mteb_files,
    resolve,
)
from workflow_scripts.errors import UserError


def test_card_is_mtebs_legacy_task_which_never_reads_excluded_ids():
    from mteb.tasks.retrieval.eng import bright_retrieval

    card = PRESETS["card"]
    assert card.exclude_ids is False and card.query_template == CARD_TEMPLATE and card.queries == "examples"
    assert "excluded" not in inspect.getsource(bright_retrieval.load_bright_data)  # the whole corpus is scored
    assert card.mteb_task == bright_meta.TASK_NAME


def test_long_is_mtebs_long_task_over_the_same_splits():
    import mteb
    from mteb.tasks.retrieval.eng import bright_retrieval

    assert bright_retrieval.DOMAINS_LONG == bright_meta.LONG_SPLITS
    metadata = mteb.get_task("BrightLongRetrieval").metadata
    long = PRESETS["long"]
    assert (long.mteb_task, [long.mteb_split]) == (metadata.name, metadata.eval_splits)
    assert (long.corpus, long.qrels, long.exclude_ids) == ("long_documents", "gold_ids_long", True)


@pytest.mark.parametrize("split", bright_meta.SPLITS)
def test_mteb_v1_1_tasks_prompts_and_excluded_ids(split):
    import mteb
    from mteb.tasks.retrieval.eng import bright_v1_1_retrieval

    metadata = mteb.get_task(MTEB_V1_1_TASKS[split]).metadata
    assert metadata.prompt == {"query": MTEB_V1_1_PROMPTS[split]} and metadata.main_score == "ndcg_at_10"
    assert PRESETS["mteb-v1.1"].mteb_result(split) == (metadata.name, "standard", "default")
    assert PRESETS["mteb-v1.1-prompt"].query(split, "Q?") == MTEB_V1_1_PROMPTS[split] + "Q?"
    # candidate lists: all documents but the query's excluded ids
    assert "excluded_set" in inspect.getsource(bright_v1_1_retrieval.load_bright_data)
    assert PRESETS["mteb-v1.1"].exclude_ids and PRESETS["mteb-v1.1-prompt"].exclude_ids


def test_mtebs_pylate_wrapper_passes_only_the_models_own_prompts():
    """Why mteb-v1.1 scores the bare query: the multi-vector wrapper never reads the task's prompt."""
    from mteb.models.model_implementations.pylate_models import MultiVectorModel

    source = inspect.getsource(MultiVectorModel)
    assert "get_prompt(self.model_prompts, task_metadata" in source and "metadata.prompt" not in source
    assert PRESETS["mteb-v1.1"].query("biology", "Q?") == "Q?"


def test_reasoning_reads_a_reasoning_set_otherwise_bright():
    reasoning, bright = PRESETS["reasoning"], PRESETS["bright"]
    assert reasoning.queries in bright_meta.REASONING_CONFIGS
    assert reasoning.definition() | {"queries": "examples"} == bright.definition()


def test_overrides_and_what_compares_like_with_like():
    found = resolve(
        {
            "card": {},
            "nodrop": {"preset": "bright", "exclude_ids": False},
            "v11": {"preset": "mteb-v1.1-prompt", "instructions": {"pony": "Pony: {query}"}},
        }
    )
    assert found["nodrop"].preset == "card"  # the same definition as the card's: its published rows apply
    assert found["v11"].preset is None and found["v11"].template("pony") == "Pony: {query}"
    assert found["v11"].template("biology") == PRESETS["mteb-v1.1-prompt"].template("biology")  # merged per split
    with pytest.raises(UserError, match="evaluate/protocols/mine: not a preset name"):
        resolve({"mine": {"exclude_ids": False}})


def test_the_order_never_follows_the_config():
    names = ["mteb-v1.1", "gpt4_reason", "long", "bright", "card"]
    entries = {n: ({"preset": "reasoning"} if n == "gpt4_reason" else {}) for n in names}
    assert (
        list(resolve(entries))
        == list(resolve(dict(reversed(entries.items()))))
        == ["card", "bright", "gpt4_reason", "long", "mteb-v1.1"]
    )


def test_rules_cover_every_split_and_protocol_once():
    protocols = resolve({"card": {}, "bright": {}, "long": {}})
    lengths = dict.fromkeys(bright_meta.SPLITS, 2048)
    rules = evaluation_rules(protocols, bright_meta.SPLITS, lengths)
    pairs = [pair for r in rules for s in r.splits for pair in job_pairs(r.protocols, [s])]
    expected = [(n, s) for n, p in protocols.items() for s in bright_meta.SPLITS if p.covers(s)]
    assert sorted(pairs) == sorted(expected)
    shared = [r for r in rules if r.shared]
    assert [r.splits for r in shared] == [bright_meta.SHARED_DOCUMENTS]
    assert sum(len(r.splits) for r in rules if not r.shared) == 10  # one job per other split


def test_mteb_files_name_a_file_per_task():
    protocols = [p.summary(bright_meta.SPLITS) for p in resolve({"card": {}, "long": {}, "mteb-v1.1": {}}).values()]
    files = mteb_files(protocols, ["stage2"])
    assert [f[2] for f in files[:2]] == ["BrightRetrieval", "BrightLongRetrieval"]
    assert files[1][3] == bright_meta.LONG_SPLITS
    assert [f[2] for f in files[2:]] == [MTEB_V1_1_TASKS[s] for s in bright_meta.SPLITS]
