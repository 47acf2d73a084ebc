"""Open-set runs: hold one defect type out of a partition entirely, as if it first appeared after shipping.

The runner (inspect_train.tasks.runner) trains every arm as usual on a view of the partition without the
held-out type, so neither the real pool, nor any generator, nor a generator cache ever hears of it; the test set
is the known types' test images (and test/good with `--with-good`) plus every image of the held-out type, base
and test alike, labelled unknown. This module holds those pieces and the results section that sums them up.
"""

from __future__ import annotations

import torch

from inspect_train.data.category import CategoryData
from inspect_train.errors import InputError
from inspect_train.metrics.open_set import UNKNOWN_SCORES
from inspect_train.report import summarise
from inspect_train.tasks.test_set import TestSet

UNKNOWN = "unknown"  # the true class of a held-out image in predictions.csv
UNKNOWN_LABEL = -1  # its label in a TestSet (no class index)


def held_out_types(named: list[str] | None, defect_types: list[str]) -> list[str]:
    """The defect types to hold out in turn: those named with --unknown (checked), else every type.

    Each run must keep at least two known defect types, so the data needs at least three.
    """
    defect_types = sorted(defect_types)
    if len(defect_types) < 3:
        raise InputError(f"--open-set holds one defect type out and needs at least 2 known ones left; the data has "
                         f"{len(defect_types)} defect type(s) ({', '.join(defect_types)})")
    if not named:
        return defect_types
    for name in named:
        if name not in defect_types:
            raise InputError(f"--unknown {name}: not a defect type of this data (it has {', '.join(defect_types)})")
    return list(dict.fromkeys(named))


def known_part(part: dict, held_out: str) -> dict:
    """The partition as the held-out run sees it: the same split, without the held-out type."""
    return {**part, "defects": {t: split for t, split in part["defects"].items() if t != held_out}}


def unknown_images(data: CategoryData, part: dict, held_out: str):
    """Every image of the held-out type (base and test): none of them was trained on, so all test it."""
    split = part["defects"][held_out]
    return data.defects[held_out].select(sorted(split["base"] + split["test"]))


def with_unknown(tests, data: CategoryData, part: dict, held_out: str):
    """The known types' TestSet with the held-out type's images appended, labelled UNKNOWN_LABEL."""
    extra = unknown_images(data, part, held_out)
    unknown = torch.cat([torch.zeros(len(tests.names), dtype=torch.bool), torch.ones(len(extra), dtype=torch.bool)])
    return TestSet(tests.names + [f"{held_out}/{n}" for n in extra.names], torch.cat([tests.images, extra.images]),
                   torch.cat([tests.masks, extra.masks]),
                   torch.cat([tests.labels, torch.full((len(extra),), UNKNOWN_LABEL, dtype=torch.long)]),
                   tests.classes, tests.n_defect, unknown=unknown)


def _mean(values: list) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def partition_entry(partition: int, held: dict[str, dict], arms: list[str], metrics: list[str]) -> dict:
    """One partition of an open-set run, in the shape every report reads: each arm's metrics are the mean over
    the held-out types (so results.summary is the overall mean ± std over partitions and the difference to
    real-only); the per-type runs ride along under `held_out` until `section` moves them."""
    means = {arm: {m: _mean([(e["arms"].get(arm) or {}).get(m) for e in held.values()]) for m in metrics}
             for arm in arms}
    return {"partition": partition, "arms": means, "tests": {}, "held_out_runs": len(held), "held_out": held}


def section(entries: list[dict], arms: list[str], metrics: list[str], baseline: str | None,
            types: list[str]) -> dict:
    """results.json `open_set`: per partition, held-out type and arm the runs (moved out of `entries`), and the
    summary per held-out type (mean ± std over partitions, difference to real-only), overall (over partitions)
    and over every held-out run (type x partition)."""
    partitions = [{"partition": e["partition"], "held_out": e.pop("held_out")} for e in entries]
    per_type = {t: summarise([{"arms": p["held_out"][t]["arms"]} for p in partitions], arms, metrics, baseline)
                for t in types}
    # Mean ± std over every held-out run (type x partition), differences paired per run: the spread between
    # held-out types, which a one-partition run has and the per-partition summary cannot show.
    per_run = summarise([{"arms": p["held_out"][t]["arms"]} for p in partitions for t in types], arms, metrics,
                        baseline)
    return {
        "held_out_types": list(types),
        "unknown_scores": dict(UNKNOWN_SCORES),
        "positive": "unknown (an image of the held-out type)",
        "metrics": list(metrics),
        "partitions": partitions,
        "summary": {"per_type": per_type, "overall": summarise(entries, arms, metrics, baseline),
                    "over_held_out_runs": per_run},
    }
