"""Promotion gates: whether a newly trained model may replace the served one, decided from paired counts.

A reward model is compared with the current one on the same held-out pairs (McNemar's exact test: the pairs
only one of the two gets right); a policy with the current policy on the same held-out prompts, under a
judge it was not optimised against (a sign test over prompts where one answer scores higher), and against a
KL budget; a policy that maximised a reward model must also have raised that reward model's mean score (its
own objective), or its round failed. "Worse beyond noise" is a one-sided p-value under GATE_ALPHA. No
held-out data, too little, or no model to compare with, promotes it marked "unassessed"; a policy promoted
although its win-rate's interval contains 0.5 reads "inconclusive" (served all the same). Torch-free: jobs
decide, the backend shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from backend.core.settings import Settings
from backend.core.stats import rate, sign_test

Status = Literal["promoted", "inconclusive", "unassessed", "rejected"]  # all but "rejected" are served
NO_HELD_OUT = "unassessed (no held-out prompt)"


@dataclass(frozen=True)
class Verdict:
    """What the gate decided and why, kept in the version's meta.json as `gate`."""

    status: Status
    reason: str
    p_value: float | None = None
    judge: str | None = None  # which model judged a policy

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def enforced(verdict: Verdict, settings: Settings) -> Verdict:
    """With GATES=false every model is promoted; the verdict it would have had is kept in the reason."""
    if verdict.status != "rejected" or settings.gates:
        return verdict
    return Verdict(
        "promoted", f"GATES=false; the gate would have rejected it: {verdict.reason}", verdict.p_value, verdict.judge
    )


def reward_verdict(
    new_correct: list[bool], old_correct: list[bool] | None, current: int | None, settings: Settings
) -> Verdict:
    """Reject a reward model whose held-out accuracy is worse than the current one's beyond noise."""
    n = len(new_correct)
    if n == 0:
        return Verdict("unassessed", f"{NO_HELD_OUT}: no pair's prompt is held out yet")
    if old_correct is None or current is None:
        return Verdict("unassessed", "the lineage's first reward model: nothing to compare with")
    if n < settings.gate_min_held_out:
        return Verdict("unassessed", f"{n} held-out pairs, fewer than GATE_MIN_HELD_OUT={settings.gate_min_held_out}")
    better = sum(a and not b for a, b in zip(new_correct, old_correct, strict=True))
    worse = sum(b and not a for a, b in zip(new_correct, old_correct, strict=True))
    p = sign_test(better, worse)
    new, old = rate(sum(new_correct), n), rate(sum(old_correct), n)
    compared = (
        f"held-out accuracy {new} vs reward v{current}'s {old.value:.3f} on the same pairs "
        f"({better} only it gets right, {worse} only v{current} does; McNemar one-sided p={p:.3g})"
    )
    if p < settings.gate_alpha:
        return Verdict("rejected", f"worse than the current model: {compared}", p)
    return Verdict("promoted", f"not worse than the current model: {compared}", p)


def policy_verdict(
    wins: int,
    losses: int,
    ties: int,
    kl: float,
    judge: str | None,
    previous: int | None,
    settings: Settings,
    held_out: bool = True,
    own: tuple[float, float] | None = None,
    judge_favours_baseline: bool = False,
) -> Verdict:
    """Reject a policy that drifts past the KL budget, that did not raise the mean reward of the reward model it
    maximised (`own`: before, after), or that loses to the current policy beyond noise under a judge it was
    not optimised against. `held_out=False`: the prompts it was assessed on were trained on."""
    n = wins + losses + ties
    if kl > settings.kl_budget:
        return Verdict(
            "rejected", f"KL to the reference {kl:.3f} nats/token exceeds KL_BUDGET={settings.kl_budget}", judge=judge
        )
    if own is not None and not own[1] > own[0]:
        return Verdict(
            "rejected",
            f"did not raise its own objective: mean reward under the reward model it "
            f"maximised {own[0]:.4f} before, {own[1]:.4f} after",
            judge=judge,
        )
    if not held_out:
        return Verdict("unassessed", f"{NO_HELD_OUT}; KL within budget", judge=judge)
    if judge is None or previous is None:
        return Verdict(
            "unassessed",
            "no judge it was not optimised against yet (the lineage's first reward model trained it); KL within budget",
        )
    if n < settings.gate_min_held_out:
        return Verdict(
            "unassessed",
            f"{n} held-out prompts, fewer than GATE_MIN_HELD_OUT={settings.gate_min_held_out}",
            judge=judge,
        )
    p = sign_test(wins, losses)
    win_rate = rate(wins + ties / 2, n)
    caveat = (
        (f"; {judge} is the reward model the previous policy was optimised against, so it favours the previous policy")
        if judge_favours_baseline
        else ""
    )
    compared = (
        f"win-rate {win_rate} against policy v{previous} under {judge} ({wins} wins, {losses} losses, "
        f"{ties} ties; sign test one-sided p={p:.3g}); KL {kl:.3f}{caveat}"
    )
    if p < settings.gate_alpha:
        return Verdict("rejected", f"loses to the current policy: {compared}", p, judge)
    if win_rate.low > 0.5:
        return Verdict("promoted", f"beats the current policy: {compared}", p, judge)
    return Verdict(
        "inconclusive", f"does not lose to the current policy beyond noise, nor beat it: {compared}", p, judge
    )
