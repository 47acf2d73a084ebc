"""summary.png: the headline metric of every arm at a glance (mean ± std over partitions, each partition a dot)."""

from __future__ import annotations

from pathlib import Path


def headline_chart(results: dict, path: str | Path) -> Path:
    """A bar per arm; raises ValueError when no arm has a value to draw."""
    import matplotlib  # heavy optional dependency: only the summary chart needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = results.get("headline") or results["metrics"][0]
    arms = [a for a in results["arms"] if results["summary"]["arms"].get(a, {}).get(metric)]
    if not arms:
        raise ValueError(f"no arm has a value for {metric}")
    means = [results["summary"]["arms"][a][metric]["mean"] for a in arms]
    stds = [results["summary"]["arms"][a][metric]["std"] for a in arms]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(arms), 3.6), dpi=110)
    colours = ["#9e9e9e" if a == results.get("baseline") else "#3f7fbf" for a in arms]
    ax.bar(range(len(arms)), means, yerr=stds, color=colours, capsize=5, width=0.6)
    for i, arm in enumerate(arms):
        values = [(p["arms"].get(arm) or {}).get(metric) for p in results["partitions"]]
        values = [v for v in values if v is not None]
        ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
        top = max([means[i] + stds[i], *values])  # the label sits above the error bar and every partition's dot
        ax.annotate(f"{means[i]:.3f}", (i, top), textcoords="offset points", xytext=(0, 5), ha="center",
                    fontsize=8)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel(metric)
    ax.set_ylim(0, max(1.05, max(m + s for m, s in zip(means, stds)) * 1.15))
    n = len(results["partitions"])
    ax.set_title(f"{results['task']}: {metric}, mean ± std over {n} partition{'s' * (n != 1)}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
