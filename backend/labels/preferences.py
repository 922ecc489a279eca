"""Label configs and annotations -> preference pairs (prompt, chosen, rejected); no I/O."""

from __future__ import annotations

import hashlib
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from label_studio_sdk.label_interface import LabelInterface


class InvalidConfig(ValueError):
    """The label config has no Pairwise or Ranker control this backend can serve."""


GENERATION_KEY = "generation"  # task data key naming the generation of candidates the task shows
FINISHED_KEY = "finished"  # task data key: per candidate, whether it ended (True) or was cut at MAX_NEW_TOKENS
# Data Manager columns that push the prompt and answers off screen and say little here (what remains: id,
# completed, counts, annotators, prediction score, then the task's data)
NOISY_COLUMNS = (
    "inner_id",
    "annotations_results",
    "annotations_ids",
    "predictions_results",
    "predictions_model_versions",
    "file_upload",
    "storage_filename",
    "created_at",
    "updated_at",
    "updated_by",
    "avg_lead_time",
    "draft_exists",
)
READABLE_PREFIX = "answer_"  # Ranker task data also holds each answer as answer_1..answer_K, for the Data Manager


class InvalidAnnotation(ValueError):
    """An annotation result does not match the project's label config."""


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    chosen_finished: bool | None = None  # whether the answer ended or was cut; None: not recorded
    rejected_finished: bool | None = None


@dataclass(frozen=True)
class Layout:
    """Where a label config reads the prompt and candidates, and which control ranks them."""

    kind: Literal["pairwise", "ranker"]
    control: str  # name of the Pairwise / Ranker tag
    to_name: str  # first toName (Label Studio puts it in results)
    prompt_key: str  # task data key of the prompt
    answer_keys: tuple[str, ...]  # pairwise: (left, right) data keys; ranker: (list key,)
    buckets: tuple[str, ...] = ()  # ranker buckets in config order (earlier = better)

    def num_candidates(self, ranker_k: int) -> int:
        return 2 if self.kind == "pairwise" else ranker_k

    def empty_candidates(self) -> dict[str, Any]:
        """Task data fields Label Studio requires at import, with no candidates yet."""
        if self.kind == "pairwise":
            return {key: "" for key in self.answer_keys}
        return {self.answer_keys[0]: []}

    def candidates_to_data(
        self, answers: list[str], generation: str | None = None, finished: list[bool] | None = None
    ) -> dict[str, Any]:
        """Task data fields holding these candidate answers, in the shape the config reads, tagged with the
        generation they form (Ranker item ids carry it too, so a ranking names the answers it ordered) and
        whether each ended or was cut off."""
        tag = {GENERATION_KEY: generation} if generation else {}
        if finished is not None:
            tag[FINISHED_KEY] = list(finished)
        if self.kind == "pairwise":
            # Pairwise shows the first two (a generation written under a Ranker config may hold K)
            return dict(zip(self.answer_keys, answers, strict=False)) | tag
        prefix = f"{generation}-" if generation else "c"
        items = [{"id": f"{prefix}{i}", "title": f"Answer {i + 1}", "body": text} for i, text in enumerate(answers)]
        readable = {f"{READABLE_PREFIX}{i + 1}": text for i, text in enumerate(answers)}  # Data Manager columns
        return {self.answer_keys[0]: items} | readable | tag

    def hidden_columns(self) -> list[str]:
        """Data Manager columns of internal task data: the generation tag, and the Ranker's item list, which
        shows as raw JSON (its answers also have a readable column each)."""
        hidden = [GENERATION_KEY, FINISHED_KEY] + ([self.answer_keys[0]] if self.kind == "ranker" else [])
        return [f"tasks:data.{key}" for key in hidden] + [f"tasks:{c}" for c in NOISY_COLUMNS]

    def generation_ranked(self, result: Any) -> str | None:
        """The generation a Ranker result's item ids belong to (None for Pairwise or untagged ids)."""
        if self.kind != "ranker" or not isinstance(result, list):
            return None
        for item in result:
            value = item.get("value") if isinstance(item, dict) else None
            ranker = value.get("ranker") if isinstance(value, dict) else None
            lists = ranker.values() if isinstance(ranker, dict) else [ranker] if isinstance(ranker, list) else []
            ids = [i for ids in lists if isinstance(ids, list) for i in ids if isinstance(i, str) and "-" in i]
            if ids:
                return ids[0].rsplit("-", 1)[0]
        return None

    def candidates_from_data(self, data: dict[str, Any]) -> list[str] | None:
        """The candidate answers present in task data, or None when they are missing or empty."""
        if self.kind == "pairwise":
            answers = [data.get(key) for key in self.answer_keys]
            ok = all(isinstance(a, str) and a.strip() for a in answers)
        else:
            items = data.get(self.answer_keys[0])
            answers = (
                [i.get("body") for i in items]
                if isinstance(items, list) and all(isinstance(i, dict) for i in items)
                else []
            )
            ok = len(answers) >= 2 and all(isinstance(a, str) and a.strip() for a in answers)
        return answers if ok else None

    def finished_from_data(self, data: dict[str, Any]) -> list[bool | None]:
        """Per candidate in task data, whether it ended (True), was cut off (False) or is not recorded (None:
        candidates that came with the task, or were written before the flag was)."""
        answers = self.candidates_from_data(data) or []
        flags = data.get(FINISHED_KEY)
        if isinstance(flags, list) and len(flags) == len(answers) and all(isinstance(f, bool) for f in flags):
            return list(flags)
        return [None] * len(answers)

    def readings(self, datas: list[dict[str, Any]]) -> tuple[list[str], list[str], list[bool | None]]:
        """(prompts, answers, finished) of every candidate these tasks show, one entry per candidate: what the
        reward contract reads (workers.ml.scoring), in the order the candidates stand."""
        prompts, answers, finished = [], [], []
        for data in datas:
            shown = self.candidates_from_data(data)
            if shown:
                prompts += [self.prompt_of(data)] * len(shown)
                answers += shown
                finished += self.finished_from_data(data)
        return prompts, answers, finished

    def prompt_of(self, data: dict[str, Any]) -> str:
        prompt = data.get(self.prompt_key)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidAnnotation(f"task data has no {self.prompt_key!r} text")
        return prompt


_LAYOUTS: OrderedDict[bytes, Layout] = OrderedDict()  # sha256 of the config -> its layout, newest last
_LAYOUTS_KEPT = 256  # layouts are a few names each: memory stays bounded however large the configs were
_LAYOUTS_LOCK = threading.Lock()


def parse_layout(label_config: str) -> Layout:
    """The layout of a label config, parsed once per distinct config (cached by digest, not by the text)."""
    key = hashlib.sha256(label_config.encode("utf-8", "surrogatepass")).digest()
    with _LAYOUTS_LOCK:
        if key in _LAYOUTS:
            _LAYOUTS.move_to_end(key)
            return _LAYOUTS[key]
    layout = _parse_layout(label_config)
    with _LAYOUTS_LOCK:
        _LAYOUTS[key] = layout
        while len(_LAYOUTS) > _LAYOUTS_KEPT:
            _LAYOUTS.popitem(last=False)
    return layout


def _parse_layout(label_config: str) -> Layout:
    """Find the ranking control, the prompt and the candidate fields of a label config."""
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises assorted XML/validation errors
        raise InvalidConfig(f"cannot parse label config: {exc}") from exc
    controls = [c for c in interface.controls if c.tag in ("Pairwise", "Ranker")]
    if not controls:
        raise InvalidConfig("label config needs a <Pairwise> or a <Ranker> control")
    control = controls[0]
    answer_keys = tuple(_data_key(o.value) for o in control.objects)
    texts = [o for o in interface.objects if o.tag in ("Text", "HyperText", "Paragraphs")]
    prompt = next((o for o in texts if o.name == "prompt" or _data_key(o.value) == "prompt"), None)
    prompt = prompt or next((o for o in texts if _data_key(o.value) not in answer_keys), None)
    if prompt is None:
        raise InvalidConfig("label config needs a <Text> showing the prompt")
    if control.tag == "Pairwise":
        if len(answer_keys) != 2:
            raise InvalidConfig("<Pairwise> needs toName with exactly two answers")
        return Layout("pairwise", control.name, control.to_name[0], _data_key(prompt.value), answer_keys)
    if not control.objects or control.objects[0].tag != "List":
        raise InvalidConfig("<Ranker> must point at a <List> of candidate items")
    return Layout(
        "ranker",
        control.name,
        control.to_name[0],
        _data_key(prompt.value),
        answer_keys[:1],
        _buckets(label_config, control.name),
    )


def _data_key(value: str | None) -> str:
    return (value or "").lstrip("$")


def _buckets(label_config: str, ranker: str) -> tuple[str, ...]:
    """Bucket names of a Ranker in config order (the SDK does not expose them)."""
    root = ET.fromstring(label_config)
    node = next((n for n in root.iter("Ranker") if n.get("name") == ranker), None)
    return tuple(b.get("name", "") for b in node.iter("Bucket")) if node is not None else ()


def pairs_from_result(layout: Layout, data: dict[str, Any], result: Any) -> list[Pair]:
    """Every preference pair an annotation result implies; raises InvalidAnnotation on a mismatch."""
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise InvalidAnnotation("annotation result must be a list of objects")
    mine = [r for r in result if r.get("from_name") == layout.control]
    if len(mine) > 1:
        raise InvalidAnnotation(f"more than one result for control {layout.control!r}")
    if not mine:
        if result:
            names = sorted({str(r.get("from_name")) for r in result})
            raise InvalidAnnotation(f"result names {names} but the config ranks with {layout.control!r}")
        return []
    prompt = layout.prompt_of(data)
    value = mine[0].get("value")
    if not isinstance(value, dict):
        raise InvalidAnnotation("result value must be an object")
    if layout.kind == "pairwise":
        return _pairwise(layout, data, prompt, value)
    return _ranked(layout, data, prompt, value)


def _pairwise(layout: Layout, data: dict[str, Any], prompt: str, value: dict[str, Any]) -> list[Pair]:
    selected = value.get("selected")
    if selected not in ("left", "right"):
        raise InvalidAnnotation("pairwise value.selected must be 'left' or 'right'")
    left, right = (data.get(k) for k in layout.answer_keys)
    if not isinstance(left, str) or not isinstance(right, str):
        raise InvalidAnnotation(f"task data lacks the answers {list(layout.answer_keys)}")
    left_ended, right_ended = layout.finished_from_data(data) or [None, None]
    if selected == "left":
        pair = Pair(prompt, left, right, left_ended, right_ended)
    else:
        pair = Pair(prompt, right, left, right_ended, left_ended)
    return [pair] if left != right else []


def _ranked(layout: Layout, data: dict[str, Any], prompt: str, value: dict[str, Any]) -> list[Pair]:
    items = data.get(layout.answer_keys[0])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidAnnotation(f"task data {layout.answer_keys[0]!r} must be a list of items")
    bodies = {str(i.get("id")): i.get("body") for i in items}
    flags = layout.finished_from_data(data)
    ended = {str(i.get("id")): flags[n] if n < len(flags) else None for n, i in enumerate(items)}
    ranker = value.get("ranker")
    tiers = _tiers(layout, ranker)
    unplaced = ranker.get("_", []) if isinstance(ranker, dict) else []
    seen = [item for tier in tiers for item in tier] + list(unplaced)
    if len(seen) != len(set(seen)) or not set(seen) <= set(bodies):
        raise InvalidAnnotation("ranker ids must be distinct ids of the task's items")
    textless = sorted(i for tier in tiers for i in tier if not isinstance(bodies[i], str))
    if textless:
        raise InvalidAnnotation(f"ranked items {textless} have no 'body' text to learn from")
    pairs = []
    for better, worse in combinations(range(len(tiers)), 2):
        for a in tiers[better]:
            for b in tiers[worse]:
                if bodies[a] != bodies[b]:
                    pairs.append(Pair(prompt, bodies[a], bodies[b], ended[a], ended[b]))
    return pairs


def _tiers(layout: Layout, ranker: Any) -> list[list[str]]:
    """Ranked tiers of item ids, best first: one item per tier for a full order, else one bucket per tier.

    Unplaced items (key "_") carry no preference and are left out.
    """
    if isinstance(ranker, list):  # older form {"ranker": [...]}
        ranker = {layout.control: ranker}
    if not isinstance(ranker, dict) or not all(isinstance(v, list) for v in ranker.values()):
        raise InvalidAnnotation("ranker value must be {'ranker': {name: [ids]}} or {'ranker': [ids]}")
    if not all(isinstance(i, str) for v in ranker.values() for i in v):
        raise InvalidAnnotation("ranker ids must be strings")
    placed = {k: v for k, v in ranker.items() if k != "_"}
    if not layout.buckets or set(placed) == {layout.control}:
        if set(placed) - {layout.control, layout.to_name}:
            raise InvalidAnnotation(f"unknown ranker keys {sorted(set(placed))}")
        order = next(iter(placed.values()), [])
        return [[item] for item in order]
    unknown = set(placed) - set(layout.buckets)
    if unknown:
        raise InvalidAnnotation(f"unknown buckets {sorted(unknown)}; the config has {list(layout.buckets)}")
    return [placed.get(b, []) for b in layout.buckets]


def demonstrations(label_config: str, exported: list[dict[str, Any]]) -> list[dict[str, str]]:
    """(prompt, response) rows for SFT from a project whose annotators write the ideal answer in a <TextArea>
    (Label Studio's "Supervised LLM fine-tuning" layout), read from its JSON export."""
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises assorted XML/validation errors
        raise InvalidConfig(f"cannot parse label config: {exc}") from exc
    areas = [c for c in interface.controls if c.tag == "TextArea"]
    if not areas:
        raise InvalidConfig("SFT from a project needs a <TextArea> where annotators write the answer")
    area = areas[0]
    prompt_key = _data_key(area.objects[0].value) if area.objects else "prompt"
    rows = []
    for task in exported:
        prompt = (task.get("data") or {}).get(prompt_key)
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled") or not isinstance(prompt, str):
                continue
            for item in annotation.get("result") or []:
                text = (item.get("value") or {}).get("text") if item.get("from_name") == area.name else None
                if isinstance(text, list) and "".join(map(str, text)).strip():
                    rows.append({"prompt": prompt, "response": "\n".join(map(str, text)).strip()})
    return rows
