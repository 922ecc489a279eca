"""Choosing what annotators label: the Bayesian head learns from every label, Pairwise tasks show the two of K
answers worth most, SELECTION=random is random, and each pair records the selection it was labelled under."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from backend.http.app import create_app
from backend.labels.selection import informative_score, random_score
from backend.store import Store
from tests.support.payloads import payload, setup_project, tasks_created
from tests.support.services import run_worker
from tests.support.settings import make_settings, registries_of
from workers.ml.features import feature_key
from workers.ml.head import BayesianHead, HeadConfig
from workers.ml.loading import inference_dtype


def synthetic(n: int, dim: int, seed: int) -> torch.Tensor:
    """Comparisons x = f_a - f_b whose label follows a hidden linear reward, oriented chosen - rejected."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(dim, generator=g, dtype=torch.float64)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    flip = torch.rand(n, generator=g, dtype=torch.float64) > torch.sigmoid(x @ truth)
    return torch.where(flip[:, None], -x, x), truth


def test_the_heads_posterior_shrinks_and_learns_with_labels() -> None:
    labelled, truth = synthetic(400, 16, seed=1)
    held, _ = synthetic(300, 16, seed=2)
    variances, accuracies = [], []
    for n in (0, 10, 50, 400):
        head = BayesianHead(16, HeadConfig(prior_precision=1.0)).fit(labelled[:n])
        variances.append(float(head.variance(held).mean()))
        accuracies.append(float(((held @ head.w > 0) == (held @ truth > 0)).double().mean()))
        assert head.labels == n
    assert variances == sorted(variances, reverse=True) and variances[-1] < variances[0] / 10, variances
    assert accuracies[-1] > 0.85 and accuracies[-1] > accuracies[1], accuracies


def test_the_criteria_rank_as_stated() -> None:
    head = BayesianHead(2, HeadConfig(prior_precision=1.0)).fit(torch.tensor([[3.0, 0.0]] * 20, dtype=torch.float64))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # a learned direction, an unseen one
    assert head.worth(x, "variance")[1] > head.worth(x, "variance")[0]  # the unseen direction is uncertain
    assert head.worth(x, "ucb-gap")[0] > head.mean(x)[1].abs()  # optimism adds the mean gap
    with pytest.raises(ValueError):
        head.worth(x, "nonsense")


def _stored_features(settings, prompt: str, answers: list[str]) -> np.ndarray:
    store = Store(settings.sqlalchemy_url)
    source = str(registries_of(settings).base.meta("policy", 0).get("source", ""))
    dtype = inference_dtype(settings.generation_dtype)
    cut = {a: feature_key(source, dtype, prompt, a, False) for a in answers}  # answers the limit cut off
    known = store.features(cut.values())
    keys = [cut[a] if cut[a] in known else feature_key(source, dtype, prompt, a, True) for a in answers]
    vectors = store.features(keys)
    assert set(vectors) == set(keys), "every sampled answer has its features cached"
    return np.stack([np.frombuffer(vectors[k], dtype="<f4") for k in keys]).astype(np.float64)


def test_pairwise_shows_the_two_of_k_worth_most(tmp_path, tiny_model, redis) -> None:
    """With no labels yet the head is its prior, and the posterior variance of a comparison is its squared
    distance in units of the pool's spread: the task must show the pair of its K answers farthest apart."""
    settings = make_settings(
        tmp_path, tiny_model, num_candidates=4, generation_batch_size=16, max_new_tokens=16, selection="fisher"
    )
    client = create_app(settings).test_client()
    setup_project(client)
    prompts = [(i, {"prompt": f"Say something about topic {i}.", "answer1": "", "answer2": ""}) for i in range(1, 5)]
    client.post("/webhook", json=tasks_created(1, prompts))
    run_worker(settings)
    tasks = Store(settings.sqlalchemy_url).project_tasks(1)
    pools = {t.id: t.pool for t in tasks}
    assert all(pool and len(pool) == 4 for pool in pools.values()), pools
    features = {t.id: _stored_features(settings, t.data["prompt"], t.pool) for t in tasks}
    scale = np.concatenate(list(features.values())).std(0, ddof=1) + 1e-6  # one chunk of 4 tasks x 4 answers
    shown = {}
    for task in tasks:
        f = features[task.id] / scale
        distance = {(a, b): float(((f[a] - f[b]) ** 2).sum()) for a, b in itertools.combinations(range(4), 2)}
        a, b = max(distance, key=distance.get)
        assert sorted(task.candidates) == sorted([task.pool[a], task.pool[b]]), (task.id, distance)
        assert [task.data["answer1"], task.data["answer2"]] == task.candidates
        shown[task.id] = features[task.id][[a, b]]
    # each task's stored worth: its shown pair under the prior, on one scale for the project (the shown answers')
    scale = np.concatenate(list(shown.values())).std(0, ddof=1) + 1e-6
    ratios = [t.worth / float((((shown[t.id][0] - shown[t.id][1]) / scale) ** 2).sum()) for t in tasks]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3) and ratios[0] > 0, ratios  # distance / alpha


def test_selection_random_picks_pairs_at_random_and_is_recorded(tmp_path, tiny_model, redis) -> None:
    settings = make_settings(tmp_path, tiny_model, num_candidates=4, generation_batch_size=64, max_new_tokens=6)
    client = create_app(settings).test_client()
    body = payload("setup.pairwise.json") | {
        "project": "1.1",
        "hostname": "",
        "access_token": "",
        "extra_params": '{"selection": "random"}',
    }
    assert client.post("/setup", json=body).status_code == 200
    bad = body | {"extra_params": '{"selection": "clever"}'}
    assert client.post("/setup", json=bad).status_code == 400
    client.post(
        "/webhook",
        json=tasks_created(1, [(i, {"prompt": f"Word {i}?", "answer1": "", "answer2": ""}) for i in range(1, 61)]),
    )
    run_worker(settings)
    store = Store(settings.sqlalchemy_url)
    tasks = store.project_tasks(1)
    picked = [tuple(t.pool.index(c) for c in t.candidates) for t in tasks if len(set(t.pool)) == 4]
    counts = {p: picked.count(p) for p in itertools.combinations(range(4), 2)}
    assert len(picked) >= 50 and all(counts.values()), counts  # every pair of 6 drawn (chance it isn't: ~1e-4)
    assert max(counts.values()) < len(picked) / 3, counts
    assert all(t.worth is None for t in tasks) and not store.features(["x"])  # no head, no features computed

    predict = payload("predict.pairwise.json")
    predict["tasks"] = [{"id": t.id, "data": t.data} for t in tasks]
    scores = [r["score"] for r in client.post("/predict", json=predict).json["results"]]
    assert len(set(scores)) == len(tasks) and 0.3 < np.mean(scores) < 0.7  # a uniform score per task

    annotation = payload("webhook-annotation-created.pairwise.json")
    annotation["project"]["id"] = 1
    annotation["annotation"].update(id=900, task=tasks[0].id, project=1)
    annotation["task"] = {"id": tasks[0].id, "data": tasks[0].data, "project": 1}
    assert client.post("/webhook", json=annotation).json["pairs"] == 1
    assert [p["selection"] for p in store.export_pairs(1)] == ["random"]


def test_features_are_cached_per_dtype(tmp_path, tiny_model, redis) -> None:
    """bf16 and fp32 features of one answer differ: a head fitted on one must never read the other from the
    cache (GENERATION_DTYPE changed, or a worker on other hardware)."""
    from backend.services import build
    from workers.jobs.select import Weigher
    from workers.runtime.context import JobContext

    vectors = {}
    for dtype in ("float32", "bfloat16"):
        ctx = build(make_settings(tmp_path, tiny_model, generation_dtype=dtype), cls=JobContext)
        vectors[dtype] = Weigher(ctx, "project-1", "fisher").features(["Name a fruit."], ["An apple."], [True])[0]
    assert not torch.equal(vectors["float32"], vectors["bfloat16"])  # the second was computed, not read back


@pytest.mark.parametrize("selection", ["d-optimal", "dts"])
def test_a_strategy_picks_two_of_k_and_orders_the_queue_or_leaves_it_to_chance(
    tmp_path, tiny_model, redis, selection: str
) -> None:
    """After labels, a new batch of tasks: d-optimal weighs every task (its conditional worth, so /predict
    serves distinct scores) and a refit reweighs them; dts picks pairs with the head but leaves the queue to
    chance: no worth, a refit skips, and /predict serves the same uniform score SELECTION=random would."""
    settings = make_settings(
        tmp_path, tiny_model, num_candidates=4, generation_batch_size=32, max_new_tokens=8, selection=selection
    )
    client = create_app(settings).test_client()
    setup_project(client)

    def import_tasks(ids: range) -> None:
        prompts = [(i, {"prompt": f"Name thing {i}.", "answer1": "", "answer2": ""}) for i in ids]
        client.post("/webhook", json=tasks_created(1, prompts))
        run_worker(settings)

    import_tasks(range(1, 5))
    store = Store(settings.sqlalchemy_url)
    for n, task in enumerate(store.project_tasks(1)[:2]):  # two labels, so the head has something to learn
        annotation = payload("webhook-annotation-created.pairwise.json")
        annotation["project"]["id"] = 1
        annotation["annotation"].update(id=800 + n, task=task.id, project=1)
        annotation["task"] = {"id": task.id, "data": task.data, "project": 1}
        assert client.post("/webhook", json=annotation).json["pairs"] == 1
    import_tasks(range(5, 13))
    tasks = store.project_tasks(1)
    assert all(len(t.pool) == 4 and set(t.candidates) <= set(t.pool) for t in tasks if len(set(t.pool)) == 4)
    predict = payload("predict.pairwise.json")
    predict["tasks"] = [{"id": t.id, "data": t.data} for t in tasks]
    scores = [r["score"] for r in client.post("/predict", json=predict).json["results"]]
    if selection == "dts":
        assert all(t.worth is None for t in tasks)
        assert scores == pytest.approx([random_score(t.id) for t in tasks], abs=1e-6)
    else:
        assert all(t.worth is not None and t.worth >= 0 for t in tasks)
        assert scores == pytest.approx([informative_score(t.worth) for t in tasks])
        assert len(set(scores)) > len(tasks) // 2  # conditional worths: most tasks differ
    assert [p["selection"] for p in store.export_pairs(1)] == [selection, selection]
