"""Label configs and annotation results -> preference pairs, including the real Label Studio export."""

from __future__ import annotations

import json

import pytest

from backend.labels.preferences import (
    InvalidAnnotation,
    InvalidConfig,
    Pair,
    demonstrations,
    pairs_from_result,
    parse_layout,
)
from tests.support.payloads import payload
from tests.support.settings import PAYLOADS, ROOT, SHARED_DATA

RANKER = PAYLOADS / "ranker-annotation-stored.json"
LLM_RANKER = """<View><Text name="prompt" value="$prompt"/><List name="answers" value="$items" title="All"/>
<Ranker name="rank" toName="answers"/></View>"""


def test_shipped_configs_parse() -> None:
    pairwise = parse_layout((ROOT / "label_config.xml").read_text())
    assert (pairwise.kind, pairwise.control, pairwise.answer_keys, pairwise.prompt_key) == (
        "pairwise",
        "comparison",
        ("answer1", "answer2"),
        "prompt",
    )
    ranker = parse_layout((ROOT / "label_config_ranker.xml").read_text())
    assert ranker.kind == "ranker" and ranker.answer_keys == ("items",)


def test_ranker_data_has_readable_answer_columns_and_hides_internal_ones() -> None:
    """The Data Manager shows the Ranker's item list as raw JSON: each answer also gets a plain column, and
    the RLHF tab hides the list and the generation tag."""
    ranker = parse_layout((ROOT / "label_config_ranker.xml").read_text())
    data = {"prompt": "Q?"} | ranker.candidates_to_data(["one", "two", "three"], "p0-ab")
    assert (data["answer_1"], data["answer_3"]) == ("one", "three") and data["generation"] == "p0-ab"
    assert ranker.candidates_from_data(data) == ["one", "two", "three"]
    assert ranker.hidden_columns()[:3] == ["tasks:data.generation", "tasks:data.finished", "tasks:data.items"]
    pairwise = parse_layout((ROOT / "label_config.xml").read_text()).hidden_columns()
    assert "tasks:data.generation" in pairwise and not any(c.startswith("tasks:data.answer") for c in pairwise)


def test_pairs_carry_whether_each_answer_ended() -> None:
    """Task data records per candidate whether it ended or was cut at MAX_NEW_TOKENS; each pair keeps its
    sides' flags, whichever side was chosen; data without valid flags (older tasks, imported candidates, or
    junk) reads as not recorded."""
    pairwise = parse_layout((ROOT / "label_config.xml").read_text())
    data = {"prompt": "Q?"} | pairwise.candidates_to_data(["cut", "ended"], "p1-aa", [False, True])
    assert data["finished"] == [False, True] and pairwise.finished_from_data(data) == [False, True]
    right = [{"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": "right"}}]
    assert pairs_from_result(pairwise, data, right) == [Pair("Q?", "ended", "cut", True, False)]
    for junk in ([True], "yes", [1, 0], None):
        assert pairwise.finished_from_data(data | {"finished": junk}) == [None, None]
    ranker = parse_layout((ROOT / "label_config_ranker.xml").read_text())
    data = {"prompt": "Q?"} | ranker.candidates_to_data(["a", "b", "c"], "p1-bb", [True, False, True])
    ranked = [
        {
            "from_name": "rank",
            "to_name": "answers",
            "type": "ranker",
            "value": {"ranker": {"rank": ["p1-bb-1", "p1-bb-0"]}},
        }
    ]
    assert pairs_from_result(ranker, data, ranked) == [Pair("Q?", "b", "a", False, True)]


def test_pairwise_captured_payload_left_is_first_to_name() -> None:
    body = payload("webhook-annotation-created.pairwise.json")
    layout = parse_layout(body["project"]["label_config"])
    pairs = pairs_from_result(layout, body["task"]["data"], body["annotation"]["result"])
    assert pairs == [Pair("Q0?", "good answer 0", "bad answer 0")]
    updated = payload("webhook-annotation-updated.pairwise.json")
    assert pairs_from_result(layout, body["task"]["data"], updated["annotation"]["result"]) == [
        Pair("Q0?", "bad answer 0", "good answer 0")
    ]


def test_ranker_buckets_earlier_beats_later() -> None:
    stored = json.loads(RANKER.read_text())
    layout = parse_layout(stored["label_config"])
    assert layout.buckets == ("best", "worst")
    pairs = pairs_from_result(layout, stored["task_data_example"], stored["stored_annotation"]["result"])
    assert sorted(pairs, key=lambda p: p.chosen) == [
        Pair("Q0?", "answer 0 to Q0", "answer 2 to Q0"),
        Pair("Q0?", "answer 1 to Q0", "answer 2 to Q0"),
    ]


def test_ranker_full_order_gives_every_pair_and_both_value_forms() -> None:
    layout = parse_layout(LLM_RANKER)
    data = {"prompt": "p", "items": [{"id": x, "title": x, "body": f"body {x}"} for x in "abcd"]}
    new_form = pairs_from_result(
        layout,
        data,
        [
            {
                "from_name": "rank",
                "to_name": "answers",
                "type": "ranker",
                "value": {"ranker": {"rank": ["c", "a", "d", "b"]}},
            }
        ],
    )
    old_form = pairs_from_result(
        layout,
        data,
        [{"from_name": "rank", "to_name": "answers", "type": "ranker", "value": {"ranker": ["c", "a", "d", "b"]}}],
    )
    assert new_form == old_form and len(new_form) == 6  # K(K-1)/2
    assert Pair("p", "body c", "body b") in new_form and Pair("p", "body b", "body c") not in new_form


def test_unplaced_items_carry_no_preference() -> None:
    stored = json.loads(RANKER.read_text())
    layout = parse_layout(stored["label_config"])
    value = {"ranker": {"best": ["r0_1"], "_": ["r0_0", "r0_2"]}}
    result = [{"from_name": "rank", "to_name": "answers", "type": "ranker", "value": value}]
    assert pairs_from_result(layout, stored["task_data_example"], result) == []


@pytest.mark.parametrize(
    "result",
    [
        [{"from_name": "comparison", "type": "pairwise", "value": {"selected": 42}}],
        [{"from_name": "comparison", "type": "pairwise", "value": "left"}],
        [{"from_name": "nope", "type": "pairwise", "value": {"selected": "left"}}],
        "not a list",
    ],
)
def test_results_that_do_not_match_the_config_are_rejected(result) -> None:
    layout = parse_layout((ROOT / "label_config.xml").read_text())
    with pytest.raises(InvalidAnnotation):
        pairs_from_result(layout, {"prompt": "p", "answer1": "a", "answer2": "b"}, result)


def test_ranker_rejects_unknown_ids_and_buckets() -> None:
    stored = json.loads(RANKER.read_text())
    layout = parse_layout(stored["label_config"])
    for value in (
        {"ranker": {"best": ["zz"]}},
        {"ranker": {"middle": ["r0_1"]}},
        {"ranker": {"best": ["r0_1", "r0_1"]}},
    ):
        with pytest.raises(InvalidAnnotation):
            pairs_from_result(
                layout, stored["task_data_example"], [{"from_name": "rank", "type": "ranker", "value": value}]
            )


def test_configs_without_ranking_control_are_refused() -> None:
    with pytest.raises(InvalidConfig):
        parse_layout(
            '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
        )
    with pytest.raises(InvalidConfig):
        parse_layout("<View><oops")


def test_real_label_studio_export() -> None:
    export = SHARED_DATA / "ls-pairwise-export-32.json"
    if not export.exists():
        pytest.skip(f"{export} is absent (../shared is not next to this clone): skipping the real-export test")
    tasks = json.loads(export.read_text())
    layout = parse_layout((ROOT / "label_config.xml").read_text())
    selected = [a["result"][0]["value"]["selected"] for t in tasks for a in t["annotations"]]
    pairs = [p for t in tasks for a in t["annotations"] for p in pairs_from_result(layout, t["data"], a["result"])]
    assert (len(pairs), selected.count("left"), selected.count("right")) == (32, 18, 14)
    first = tasks[0]
    assert pairs[0] == Pair(first["data"]["prompt"], first["data"]["answer1"], first["data"]["answer2"])


def test_sft_demonstrations_from_a_supervised_project_export() -> None:
    config = (PAYLOADS / "generative-ai__supervised-llm.xml").read_text()
    answer = {"from_name": "instruction", "to_name": "prompt", "type": "textarea", "value": {"text": ["def f(): pass"]}}
    exported = [
        {
            "id": 1,
            "data": {"prompt": "Write f"},
            "annotations": [{"id": 1, "result": [answer], "was_cancelled": False}],
        },
        {"id": 2, "data": {"prompt": "skip me"}, "annotations": [{"id": 2, "result": [answer], "was_cancelled": True}]},
        {"id": 3, "data": {"prompt": "empty"}, "annotations": [{"id": 3, "result": [], "was_cancelled": False}]},
    ]
    assert demonstrations(config, exported) == [{"prompt": "Write f", "response": "def f(): pass"}]
    with pytest.raises(InvalidConfig):
        demonstrations((ROOT / "label_config.xml").read_text(), exported)


def test_a_ranked_item_without_body_text_is_rejected_not_learned_as_none() -> None:
    layout = parse_layout(LLM_RANKER)
    data = {"prompt": "p", "items": [{"id": "a", "body": "body a"}, {"id": "b", "title": "no body"}]}
    result = [{"from_name": "rank", "to_name": "answers", "type": "ranker", "value": {"ranker": {"rank": ["a", "b"]}}}]
    with pytest.raises(InvalidAnnotation, match="body"):
        pairs_from_result(layout, data, result)
