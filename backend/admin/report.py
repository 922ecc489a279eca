"""`python -m backend report`: each version's gate verdict and metrics with their sample sizes and intervals,
as a table and a PNG (rejected versions drawn apart), plus what the labels themselves say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.store.registry import Registry


def gate_of(row: dict[str, Any]) -> str:
    gate = row.get("gate") or {}
    status = gate.get("status", "")
    return "forced" if gate.get("forced") else status


def _interval(m: dict[str, Any], key: str) -> str:
    low, high = m.get(f"{key}_low"), m.get(f"{key}_high")
    return f"{m[key]:.3f} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else f"{m[key]:.3f}"


def headline(kind: str, row: dict[str, Any]) -> str:
    """One version's metrics in words, each with its sample size and 95 % interval."""
    m = row.get("metrics") or {}
    if kind == "reward":
        if m.get("accuracy") is None:
            return f"held-out accuracy n={m.get('n_pairs', 0)}" if "n_pairs" in m else ""
        return f"held-out accuracy {_interval(m, 'accuracy')} n={m['n_pairs']} pairs"
    if m.get("win_rate") is None:
        return ""
    judge = f"reward v{m['judge_reward_version']}" if "judge_reward_version" in m else "its reward model"
    own = (
        f"; its own objective {m['own_reward_before']:.3f} -> {m['own_reward_after']:.3f}"
        if "own_reward_after" in m
        else ""
    )
    cut = (
        f"; answers cut at the limit {m['truncated_before']:.0%} -> {m['truncated_after']:.0%}"
        if "truncated_after" in m
        else ""
    )
    return (
        f"win-rate vs previous {_interval(m, 'win_rate')} n={m.get('n_prompts', '?')} prompts under {judge}; "
        f"KL {m.get('kl', float('nan')):.3f}; reward under that judge {m.get('reward_before', float('nan')):.3f}"
        f" -> {m.get('reward_after', float('nan')):.3f}{own}{cut}"
    )


def format_table(registry: Registry, lineage_status: dict[str, Any] | None = None) -> str:
    lines = []
    for kind in ("reward", "policy"):
        for row in registry.catalog()[kind]:
            gate = gate_of(row)
            lines.append(
                f"{kind:<6} v{row['version']:<3} {row.get('recipe', '-'):<6} {'served' if row['current'] else '':<6} "
                f"{gate or '-':<10} {headline(kind, row)}"
            )
            if (row.get("gate") or {}).get("reason"):
                lines.append(f"{'':<14}gate: {row['gate']['reason']}")
    for label, value in label_lines(lineage_status or {}):
        lines.append(f"{label}: {value}")
    return "\n".join(lines)


def label_lines(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Inter-annotator agreement and human-judged win-rates, from /status's lineage entry (report and status)."""
    lines = []
    agree = status.get("agreement") or {}
    if agree.get("n"):
        lines.append(
            (
                "inter-annotator agreement",
                f"{agree['value']:.3f} [{agree['low']:.3f}, {agree['high']:.3f}] "
                f"n={agree['n']} comparisons on {agree['tasks']} tasks "
                "(the ceiling of reward-model accuracy)",
            )
        )
    for name, r in (status.get("human_judged") or {}).items():
        if r.get("n"):
            lines.append((f"human-judged {name}", f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}] n={r['n']}"))
    return lines


def write_report(registry: Registry, lineage: str, out: Path, lineage_status: dict[str, Any] | None = None) -> str:
    """Plot every version of a lineage to `out` and return the text table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    catalog = registry.catalog()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    agree = (lineage_status or {}).get("agreement") or {}
    _rates(
        axes[0],
        catalog["reward"],
        "accuracy",
        "reward model: held-out accuracy (95 % CI, n pairs)",
        ceiling=agree.get("value") if agree.get("n") else None,
    )
    _rates(
        axes[1],
        catalog["policy"],
        "win_rate",
        "policy: win-rate vs the previous policy\n"
        "(95 % CI, n prompts; judged by a reward model it was not optimised against)",
        even=0.5,
    )
    _kl(axes[2], catalog["policy"], (lineage_status or {}).get("kl_budget"))
    fig.suptitle(
        f"RLHF report: lineage {lineage}  (o promoted, □ inconclusive, ◇ unassessed, x rejected: kept, never served)"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return format_table(registry, lineage_status)


STYLE = {
    "promoted": ("o", "tab:blue"),
    "inconclusive": ("s", "tab:olive"),
    "forced": ("o", "tab:orange"),
    "unassessed": ("D", "tab:gray"),
    "rejected": ("x", "tab:red"),
    "": ("o", "tab:blue"),
}


def _rates(
    ax: Any, rows: list[dict[str, Any]], key: str, title: str, even: float | None = None, ceiling: float | None = None
) -> None:
    for row in rows:
        m = row.get("metrics") or {}
        if m.get(key) is None:
            continue
        marker, colour = STYLE.get(gate_of(row), STYLE[""])
        low, high = m.get(f"{key}_low", m[key]), m.get(f"{key}_high", m[key])
        ax.errorbar(
            [row["version"]],
            [m[key]],
            yerr=[[m[key] - low], [high - m[key]]],
            fmt=marker,
            color=colour,
            capsize=4,
            markersize=8,
        )
        n = m.get("n_pairs", m.get("n_prompts"))
        ax.annotate(
            f"n={n}", (row["version"], high), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8
        )
    if even is not None:
        ax.axhline(even, color="gray", linestyle=":", linewidth=1)
    if ceiling is not None:
        ax.axhline(ceiling, color="tab:green", linestyle="--", linewidth=1, label="inter-annotator agreement")
        ax.legend(fontsize=8, loc="lower right")
    _frame(ax, title, (0, 1.08), [r["version"] for r in rows])


def _kl(ax: Any, rows: list[dict[str, Any]], budget: float | None) -> None:
    for row in rows:
        m = row.get("metrics") or {}
        if "kl" in m:
            marker, colour = STYLE.get(gate_of(row), STYLE[""])
            ax.plot([row["version"]], [m["kl"]], marker=marker, color=colour, markersize=8, linestyle="none")
    if budget is not None:
        ax.axhline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"KL_BUDGET {budget}")
        ax.legend(fontsize=8)
    _frame(ax, "policy: KL to the reference (nats per answer token)", None, [r["version"] for r in rows])


def _frame(ax: Any, title: str, ylim: tuple[float, float] | None, versions: list[int]) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("version")
    if versions:  # one tick per version, a little room either side, however few there are
        ax.set_xticks(versions, [f"v{v}" for v in versions])
        ax.set_xlim(min(versions) - 0.5, max(versions) + 0.5)
    if ylim:
        ax.set_ylim(*ylim)
    if not ax.lines and not ax.collections:
        ax.text(0.5, 0.5, "no versions yet", ha="center", transform=ax.transAxes)
