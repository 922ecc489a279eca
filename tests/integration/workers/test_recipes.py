"""Each recipe trains a tiny local model a couple of steps for real; evaluation and progress reporting work on it."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)

from workers.ml.evaluate import policy_metrics
from workers.ml.loading import load_policy, load_reward, load_tokenizer
from workers.ml.scoring import reward_ids, score
from workers.recipes import RECIPES, hyperparameters
from workers.recipes.base import RecipeInputs, build_config, reward_dataset
from workers.recipes.grpo import GRPORecipeConfig
from workers.recipes.ppo.rollout import read_answers
from workers.runtime import progress
from workers.runtime.progress import JobProgress

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "What is the boiling point of water?",
    "Explain reinforcement learning in one sentence.",
    "Why do annotators rank answers?",
    "Say hello.",
    "What does a reward model score?",
    "Where is Paris?",
]
CHOSEN, REJECTED = "The capital of France is Paris.", "The quick brown fox."
PAIRS = [{"prompt": p, "chosen": CHOSEN, "rejected": REJECTED} for p in PROMPTS]
SFT_ROWS = [{"prompt": p, "response": "A reward model scores answers."} for p in PROMPTS]
COMMON = {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 4}
# A random tiny model never ends within 8 tokens: masking cut completions would leave nothing to learn from.
GROUPS = {"max_completion_length": 8, "num_generations": 2, "mask_truncated_completions": False}
OVERRIDES = {
    "reward": {**COMMON, "max_length": 64},
    "ppo": {**COMMON, "response_length": 8, "num_ppo_epochs": 1, "max_prompt_length": 64},
    "dpo": {**COMMON, "max_length": 64},
    "grpo": {**COMMON, **GROUPS},
    "rloo": {**COMMON, **GROUPS},
    "sft": {**COMMON, "max_length": 64},
}
METRICS = {
    "reward": {"eval_accuracy", "eval_loss", "train_loss", "train_samples_per_second", "train_runtime"},
    "ppo": {"objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg", "train_runtime"},
    "dpo": {"train_loss", "train_runtime", "eval_loss", "eval_rewards/accuracies"},
    "grpo": {"train_loss", "train_runtime", "reward", "kl"},
    "rloo": {"train_loss", "train_runtime", "reward", "kl"},
    "sft": {"train_loss", "train_runtime"},
}


def make_inputs(models: SimpleNamespace, out_dir: Path, **changes: object) -> RecipeInputs:
    """Inputs with every kind of data filled, so any recipe finds what it needs."""
    inputs = RecipeInputs(
        policy_dir=models.policy,
        reference_dir=models.policy,
        out_dir=out_dir,
        reward_dir=models.reward,
        pairs=PAIRS,
        eval_pairs=PAIRS[:4],
        prompts=PROMPTS,
        sft_rows=SFT_ROWS,
    )
    for key, value in changes.items():
        setattr(inputs, key, value)
    return inputs


def weights_changed(before: Path, after: Path) -> bool:
    """True when any tensor the two checkpoints share (same name and shape) differs."""
    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    shared = [k for k in a if k in b and a[k].shape == b[k].shape]
    assert shared, "the checkpoints share no tensors"
    return any(not torch.equal(a[k], b[k].to(a[k].dtype)) for k in shared)


def test_every_registered_name_is_a_recipe_of_its_declared_kind() -> None:
    """The torch-free names (settings, CLI) and the recipe modules agree: a recipe is its file plus one line."""
    from backend.core.algorithms import RECIPE_KINDS

    assert set(RECIPES) == set(RECIPE_KINDS)
    for name, module in RECIPES.items():
        assert module.KIND == RECIPE_KINDS[name] and callable(module.train), name
        assert is_dataclass(module.CONFIG) and module.CONFIG.__name__.endswith("RecipeConfig")
        for f in fields(module.CONFIG):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help"


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_trains_saves_and_reports(name: str, use_lora: bool, models: SimpleNamespace, tmp_path: Path) -> None:
    inputs = make_inputs(models, tmp_path / "out", use_lora=use_lora, overrides=OVERRIDES[name])
    metrics = RECIPES[name].train(inputs)
    assert METRICS[name] <= set(metrics), METRICS[name] - set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert weights_changed(models.policy, inputs.out_dir)
    assert not any("lora" in k for k in load_file(inputs.out_dir / "model.safetensors"))
    if name == "reward":
        assert 0.0 <= metrics["eval_accuracy"] <= 1.0
        model, tokenizer = load_reward(inputs.out_dir)
        assert len(score(model, tokenizer, PROMPTS[:2], ["a", "b"], [True, False], 1.0)) == 2
    else:
        model, tokenizer = load_policy(inputs.out_dir)
        assert model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_overrides_apply_known_fields_and_ignore_others(caplog: pytest.LogCaptureFixture) -> None:
    inputs = RecipeInputs(
        policy_dir=Path(), reference_dir=Path(), out_dir=Path(), overrides={"num_generations": 2, "not_a_field": 1}
    )
    config = build_config(GRPORecipeConfig, inputs)
    assert config.num_generations == 2 and hyperparameters("grpo", inputs)["num_generations"] == 2
    assert "not_a_field" in caplog.text


@pytest.mark.parametrize(
    ("name", "changes", "match"),
    [
        ("reward", {"pairs": []}, "preference pairs"),
        ("dpo", {"pairs": []}, "preference pairs"),
        ("sft", {"sft_rows": []}, "SFT rows"),
        ("ppo", {"prompts": PROMPTS[:2]}, "prompts"),
        ("grpo", {"prompts": PROMPTS[:1]}, "prompts"),
        ("rloo", {"overrides": {"per_device_train_batch_size": 3}}, "num_generations"),
        ("ppo", {"reward_dir": None}, "reward_dir"),
    ],
)
def test_insufficient_data_is_a_value_error(
    name: str, changes: dict, match: str, models: SimpleNamespace, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=match):
        RECIPES[name].train(make_inputs(models, tmp_path / "out", **changes))


@pytest.fixture
def running_job(monkeypatch: pytest.MonkeyPatch, redis):
    """A real RQ job in Redis that progress reporting takes for the one this process runs."""
    from rq.job import Job

    job = Job.create("builtins.print", connection=redis)
    job.save()
    monkeypatch.setattr(progress, "get_current_job", lambda: job)
    return job


def test_job_progress_writes_meta_inside_a_job(models: SimpleNamespace, tmp_path: Path, running_job, redis) -> None:
    """Progress lands in a real RQ job's meta in Redis (the training job's, as a worker would run it)."""
    from rq.job import Job

    job = running_job
    callback = JobProgress(stage="sft", min_interval=0.0)
    RECIPES["sft"].train(make_inputs(models, tmp_path / "out", callbacks=[callback], overrides=OVERRIDES["sft"]))
    stored = Job.fetch(job.id, connection=redis).meta["progress"]
    assert stored["step"] == stored["total"] == 2
    assert stored["stage"] == "sft" and math.isfinite(stored["loss"])


def test_ppo_progress_tells_rollouts_from_optimising(
    models: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running_job, redis
) -> None:
    """A PPO step on a CPU takes minutes: /status shows which half of it runs, with the step in progress."""
    from rq.job import Job

    job = running_job
    stages = []
    real_record = progress.record
    monkeypatch.setattr(
        progress, "record", lambda j=None, **f: (stages.append((f["stage"], f["step"])), real_record(j, **f))
    )
    RECIPES["ppo"].train(make_inputs(models, tmp_path / "out", overrides=OVERRIDES["ppo"]))
    assert stages[0] == ("ppo: generating rollouts", 1) and ("ppo: optimising", 1) in stages
    assert Job.fetch(job.id, connection=redis).meta["progress"]["stage"].startswith("ppo: ")


def test_job_progress_outside_a_job_keeps_the_loss_and_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    state = SimpleNamespace(global_step=1, max_steps=2)
    saved = []
    monkeypatch.setattr(progress, "record", lambda *a, **k: saved.append(k))
    callback = JobProgress(min_interval=0.0)
    callback.on_log(None, state, None, logs={"loss/policy_avg": 1.5})  # type: ignore[arg-type]
    assert callback.loss == 1.5 and saved == []  # PPO's loss name is understood; no job, nothing recorded


def test_load_tokenizer_pads_left_with_a_token_distinct_from_eos(models: SimpleNamespace, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(models.policy))
    tokenizer.pad_token = tokenizer.eos_token  # like SmolLM2-Instruct, whose pad is <|im_end|>
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.padding_side == "left"
    assert loaded.pad_token == tokenizer.unk_token != loaded.eos_token


def test_reward_is_read_at_the_eos_token_as_ppo_reads_it(models: SimpleNamespace) -> None:
    """Reward training, scoring and PPO all end the sequence at the answer's EOS (no trailing template newline)."""
    model, tokenizer = load_reward(models.reward)
    ids = reward_ids(tokenizer, PROMPTS[0], "Paris.", True)
    assert ids[-1] == tokenizer.eos_token_id
    messages = [{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": "Paris."}]
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert full[: len(ids)] == ids  # the template's own tokens, cut after EOS
    dataset = reward_dataset([{"prompt": PROMPTS[0], "chosen": "Paris.", "rejected": "No."}], tokenizer)
    assert dataset[0]["chosen_ids"] == ids
    answers = ["Paris.", "The quick brown fox jumps over the lazy dog.", "", "Numbers: 0 1 2"]
    ended = [True, False, None, False]
    batched = score(model, tokenizer, PROMPTS[:4], answers, ended, 1.0, batch_size=4)
    single = score(model, tokenizer, PROMPTS[:4], answers, ended, 1.0, batch_size=1)
    assert batched == pytest.approx(single, abs=1e-5)


def test_policy_metrics_are_finite_and_in_range(models: SimpleNamespace) -> None:
    args = dict(
        reference_dir=models.policy,
        judge_dir=models.reward,
        own_dir=None,
        prompts=PROMPTS[:4],
        max_new_tokens=8,
        missing_eos_penalty=1.0,
    )
    metrics = policy_metrics(models.other, models.policy, **args)
    assert set(metrics) == {
        "reward_before",
        "reward_after",
        "win_rate",
        "win_rate_low",
        "win_rate_high",
        "n_prompts",
        "wins",
        "losses",
        "ties",
        "kl",
        "truncated_before",
        "truncated_after",
    }
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["n_prompts"] == 4 and metrics["wins"] + metrics["losses"] + metrics["ties"] == 4
    assert 0.0 <= metrics["win_rate_low"] <= metrics["win_rate"] <= metrics["win_rate_high"] <= 1.0
    assert metrics["win_rate_high"] - metrics["win_rate_low"] > 0.4  # four prompts cannot tell much
    same = policy_metrics(models.policy, models.policy, **args)
    assert same["kl"] == pytest.approx(0.0, abs=1e-6)
    assert same["ties"] == 4 and same["win_rate"] == 0.5 and same["reward_before"] == same["reward_after"]


def test_launched_training_saves_once_and_reports_back(models: SimpleNamespace, tmp_path: Path) -> None:
    """TRAIN_PROCESSES > 1 goes through `accelerate launch -m workers.runtime.launch` (one CPU process here,
    DDP on GPUs)."""
    from workers.runtime.launch import run_recipe

    inputs = make_inputs(models, tmp_path / "out", overrides=OVERRIDES["sft"])
    metrics = run_recipe("sft", inputs, processes=2)
    assert "train_loss" in metrics and hyperparameters("sft", inputs)["max_steps"] == 2
    assert weights_changed(models.policy, inputs.out_dir)
    assert not list(inputs.out_dir.glob("launch*.json"))


class MasterWeights(TrainerCallback):
    """What the optimiser updates: the trainable parameters' dtypes, and the share of their elements that one
    step changed (token and position embeddings left out: rows of tokens absent from a batch get no gradient)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.dtypes = {p.dtype for p in self.params.values()}
        self.start = {
            n: p.detach().clone() for n, p in self.params.items() if not n.endswith(("wte.weight", "wpe.weight"))
        }

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step == 1:
            changed = sum(int((self.params[n].detach() != t).sum()) for n, t in self.start.items())
            self.changed = changed / sum(t.numel() for t in self.start.values())


@pytest.fixture(scope="module")
def bf16_models(models: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny policy and reward model saved in bf16, as a bf16 GPU saves every version."""
    root = tmp_path_factory.mktemp("bf16")
    for name, cls in (("policy", AutoModelForCausalLM), ("reward", AutoModelForSequenceClassification)):
        model = cls.from_pretrained(str(getattr(models, name)), dtype=torch.bfloat16)
        model.save_pretrained(root / name)
        AutoTokenizer.from_pretrained(str(models.policy)).save_pretrained(root / name)
    return SimpleNamespace(policy=root / "policy", other=models.other, reward=root / "reward")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_training_from_a_bf16_checkpoint_updates_fp32_master_weights(
    name: str, bf16_models: SimpleNamespace, tmp_path: Path
) -> None:
    """At the recipes' own learning rates one step changes (nearly) every fp32 weight; in pure bf16 most updates
    round away (3.5 % of weights changed in 10 PPO steps at 3e-6)."""
    probe = MasterWeights()
    overrides = {k: v for k, v in OVERRIDES[name].items() if k not in ("learning_rate", "max_steps")} | {"max_steps": 1}
    RECIPES[name].train(make_inputs(bf16_models, tmp_path / "out", callbacks=[probe], overrides=overrides))
    assert probe.dtypes == {torch.float32}
    assert probe.changed > 0.9, f"only {probe.changed:.1%} of the weights changed"


def test_rollout_lengths_follow_max_new_tokens_unless_overridden(models: SimpleNamespace) -> None:
    from workers.recipes.ppo import PPORecipeConfig

    inputs = RecipeInputs(
        policy_dir=Path(), reference_dir=Path(), out_dir=Path(), max_new_tokens=77, missing_eos_penalty=2.5
    )
    ppo, grpo = build_config(PPORecipeConfig, inputs), build_config(GRPORecipeConfig, inputs)
    assert (ppo.response_length, ppo.missing_eos_penalty, grpo.max_completion_length) == (77, 2.5, 77)
    assert grpo.mask_truncated_completions
    inputs.overrides = {"response_length": 40}
    assert build_config(PPORecipeConfig, inputs).response_length == 40


def test_a_cut_off_answer_is_not_scored_as_if_finished(models: SimpleNamespace) -> None:
    model, tokenizer = load_reward(models.reward)
    answer = "The quick brown fox jumps over"
    assert reward_ids(tokenizer, PROMPTS[0], answer, True)[-1] == tokenizer.eos_token_id
    assert reward_ids(tokenizer, PROMPTS[0], answer, None) == reward_ids(tokenizer, PROMPTS[0], answer, True)
    cut_ids = reward_ids(tokenizer, PROMPTS[0], answer, False)
    assert tokenizer.eos_token_id not in cut_ids[-2:]
    [as_finished, as_cut] = score(model, tokenizer, PROMPTS[:1] * 2, [answer] * 2, [True, False], 0.0)
    assert as_cut != as_finished
    assert score(model, tokenizer, PROMPTS[:1] * 2, [answer] * 2, [True, False], 1.5) == pytest.approx(
        [as_finished, as_cut - 1.5], abs=1e-5
    )
    one_token = policy_metrics(
        models.other,
        models.policy,
        models.policy,
        models.reward,
        None,
        PROMPTS[:4],
        max_new_tokens=1,
        missing_eos_penalty=1.0,
    )
    assert one_token["truncated_after"] == one_token["truncated_before"] == 1.0  # no answer ends in one token


def test_one_reading_of_a_cut_and_a_finished_answer_in_every_stage(models: SimpleNamespace) -> None:
    """The same (prompt, answer), once finished and once cut at the limit, gets the same reward in reward
    training's tokens, candidate scoring, GRPO/RLOO's reward function, PPO's reading, evaluation and the
    reward gate; the selection features are read at the same token."""
    from workers.ml.chat import prompt_texts
    from workers.ml.evaluate import reward_correct
    from workers.ml.features import eos_features
    from workers.recipes.group_rl import reward_function

    penalty = 1.5
    model, tokenizer = load_reward(models.reward, torch.float32)
    prompt, answer = PROMPTS[0], "The quick brown fox jumps over"
    expected = score(model, tokenizer, [prompt] * 2, [answer] * 2, [True, False], penalty)  # finished, cut
    assert expected[0] != expected[1]

    # reward training: a cut answer ends where it was cut, a finished one at its EOS, as scoring reads them
    pair = {"prompt": prompt, "chosen": answer, "rejected": answer, "chosen_finished": True, "rejected_finished": False}
    row = reward_dataset([pair], tokenizer)[0]
    with torch.no_grad():
        trained = [
            model(input_ids=torch.tensor([row[f"{side}_ids"]])).logits[0, 0].item() for side in ("chosen", "rejected")
        ]
    assert [trained[0], trained[1] - penalty] == pytest.approx(expected, abs=1e-5)
    assert row["rejected_ids"][-1] != tokenizer.eos_token_id

    # what the policy generated: the answer's tokens after the prompt, with or without its EOS
    query = tokenizer(prompt_texts(tokenizer, [prompt]), add_special_tokens=False)["input_ids"][0]
    full = reward_ids(tokenizer, prompt, answer, True)
    assert full[: len(query)] == query
    finished_ids, cut_ids = full[len(query) :], full[len(query) : -1]

    # GRPO / RLOO: trl hands the reward function each completion's ids, ending with EOS when it ended
    group = reward_function(models.reward, [tokenizer.eos_token_id], penalty)
    got = group(
        prompts=[[{"role": "user", "content": prompt}]] * 2,
        completions=[[{"role": "assistant", "content": answer}]] * 2,
        completion_ids=[finished_ids, cut_ids],
    )
    assert got == pytest.approx(expected, abs=1e-5)

    # PPO: the sampled tokens read back as (answer, finished), a finished one padded after its EOS, and scored
    pad = tokenizer.pad_token_id
    read = [
        read_answers(tokenizer, torch.tensor([ids]), [tokenizer.eos_token_id])
        for ids in (finished_ids + [pad], cut_ids)
    ]
    assert [int(mask.sum()) for mask, _, _ in read] == [len(finished_ids), len(cut_ids)]
    assert [bool(done) for _, done, _ in read] == [True, False]
    texts = [text for _, _, (text,) in read]
    assert score(model, tokenizer, [prompt] * 2, texts, [True, False], penalty) == pytest.approx(expected, abs=1e-5)

    # evaluation and the reward gate read by the same contract
    assert reward_correct(models.reward, [pair], penalty) == [expected[0] > expected[1]]
    swapped = pair | {"chosen_finished": False, "rejected_finished": True}
    assert reward_correct(models.reward, [swapped], penalty) == [expected[1] > expected[0]]

    # selection features: the hidden state at the very token the reward is read at
    policy, _ = load_policy(models.policy, torch.float32)
    features = eos_features(policy, tokenizer, [prompt] * 2, [answer] * 2, [True, False])
    with torch.no_grad():
        hidden = policy(input_ids=torch.tensor([full]), output_hidden_states=True).hidden_states[-1][0]
    assert torch.allclose(features[0], hidden[-1], atol=1e-5) and torch.allclose(features[1], hidden[-2], atol=1e-5)


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_group_rl_kl_anchors_to_the_reference_not_the_starting_policy(
    name: str, models: SimpleNamespace, tmp_path: Path
) -> None:
    """A later round starts from v1 but its KL term is to v0, as PPO's and DPO's are: at the first step, before
    any update, the KL to v0 is already there (to the starting policy it is trl's numerical floor, ~0.002)."""
    overrides = OVERRIDES[name] | {"max_steps": 1, "beta": 0.1}
    later = RECIPES[name].train(
        make_inputs(
            models, tmp_path / "later", policy_dir=models.other, reference_dir=models.policy, overrides=overrides
        )
    )
    first = RECIPES[name].train(
        make_inputs(
            models, tmp_path / "first", policy_dir=models.other, reference_dir=models.other, overrides=overrides
        )
    )
    assert later["kl"] > 5 * first["kl"], (later["kl"], first["kl"])  # tiny models: 0.031 against 0.0017


class FinalWeights(TrainerCallback):
    """The weights as training left them in memory, before anything saved them."""

    def on_train_end(self, args, state, control, model=None, **kwargs) -> None:
        self.weights = {n: p.detach().float().clone() for n, p in model.named_parameters()}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float() for n, p in model.named_parameters()}


def test_a_bf16_mixed_policy_round_saves_the_update_the_next_round_starts_from(
    bf16_models: SimpleNamespace, tmp_path: Path
) -> None:
    """TRAIN_PRECISION=bf16-mixed (bf16 autocast, as on a GPU; a CPU runs it too), from a policy whose weights
    bf16 holds exactly (the embedded model's, or any version a bf16 save wrote): a DPO round's update is below
    half a bf16 step for most weights, and the file the next round loads keeps >= 99 % of it."""
    final = FinalWeights()
    overrides = {**OVERRIDES["dpo"], "learning_rate": 1e-5}
    RECIPES["dpo"].train(make_inputs(bf16_models, tmp_path / "out", bf16=True, callbacks=[final], overrides=overrides))
    start = _weights(AutoModelForCausalLM.from_pretrained(str(bf16_models.policy), dtype=torch.float32))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype="auto")  # as the next round reads it
    assert loaded.dtype == torch.float32
    saved = _weights(loaded)
    update = {n: final.weights[n] - start[n] for n in start}
    half_step = {n: 2.0 ** (torch.floor(torch.log2(start[n].abs().clamp_min(1e-30))) - 8) for n in start}
    small = sum(int((update[n].abs() < half_step[n]).sum()) for n in start) / sum(t.numel() for t in start.values())
    assert small > 0.5, f"only {small:.0%} of the update is below half a bf16 step: the test proves nothing"
    kept = sum(float(((saved[n] - start[n]) * update[n]).sum()) for n in start) / sum(
        float((update[n] ** 2).sum()) for n in start
    )
    assert kept >= 0.99, f"the saved model keeps {kept:.1%} of the round's update"


def test_a_bf16_mixed_reward_version_reloads_as_trained(models: SimpleNamespace, tmp_path: Path) -> None:
    """PPO's value model starts from the reward version: it must be the fp32 weights training ended with."""
    final = FinalWeights()
    RECIPES["reward"].train(
        make_inputs(models, tmp_path / "out", bf16=True, callbacks=[final], overrides=OVERRIDES["reward"])
    )
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out"), num_labels=1, dtype="auto")
    assert loaded.dtype == torch.float32
    saved = _weights(loaded)
    assert set(saved) == set(final.weights)
    assert all(torch.equal(saved[n], final.weights[n]) for n in saved)
