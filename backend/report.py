"""`python -m backend report`: reward accuracy and policy reward / KL / win-rate across versions (PNG + table)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.core.registry import Registry

POLICY_METRICS = ("reward_before", "reward_after", "kl", "win_rate")


def _rows(registry: Registry, kind: str) -> list[dict[str, Any]]:
    return registry.catalog()[kind]


def format_table(registry: Registry) -> str:
    lines = ["kind    version recipe  " + "  ".join(f"{m:>13}" for m in ("eval_accuracy", "eval_loss", *POLICY_METRICS))]
    for kind in ("reward", "policy"):
        for row in _rows(registry, kind):
            metrics = row.get("metrics") or {}
            cells = [metrics.get(m) for m in ("eval_accuracy", "eval_loss", *POLICY_METRICS)]
            lines.append(f"{kind:<7} v{row['version']:<6} {row.get('recipe', ''):<7} " +
                         "  ".join(f"{c:>13.4f}" if isinstance(c, (int, float)) else f"{'-':>13}" for c in cells))
    return "\n".join(lines)


def write_report(registry: Registry, lineage: str, out: Path) -> str:
    """Plot the metrics of every version of a lineage to `out` and return the text table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rewards, policies = _rows(registry, "reward"), _rows(registry, "policy")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _plot(axes[0], rewards, ("eval_accuracy",), "reward model: held-out accuracy")
    _plot(axes[1], policies, ("reward_before", "reward_after"), "policy: mean reward on held-out prompts")
    _plot(axes[2], policies, ("kl", "win_rate"), "policy: KL to reference, win-rate vs previous")
    fig.suptitle(f"RLHF report: lineage {lineage}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return format_table(registry)


def _plot(ax: Any, rows: list[dict[str, Any]], metrics: tuple[str, ...], title: str) -> None:
    for metric in metrics:
        points = [(r["version"], r["metrics"][metric]) for r in rows if metric in (r.get("metrics") or {})]
        if points:
            ax.plot(*zip(*points), marker="o", label=metric)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("version")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend() if ax.lines else ax.text(0.5, 0.5, "no versions yet", ha="center", transform=ax.transAxes)
