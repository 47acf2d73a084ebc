"""`inspect-train classify`: which defect is it? Every arm next to the real-only baseline, per partition.

The subcommand's flags; the task itself is inspect_train.tasks.classify, imported when the command runs.
"""

from __future__ import annotations

from inspect_train.commands._task_flags import add_task_arguments
from inspect_train.settings import ClassifySettings
from inspect_train.tasks.registry import TaskEntry, register_task


def add_arguments(p) -> None:
    add_task_arguments(p, "classify", "classify-toy", "classify-256",
                       model_help="any timm model name (preset: resnet34 with --data, resnet18 on the toy data)",
                       settings_class=ClassifySettings)
    p.add_argument("--open-set", action="store_true",
                   help="open-set evaluation: in each partition hold each defect type out in turn (no base image, no "
                        "generator), train every arm on the rest and test on the known test images plus all of the "
                        "held-out type's; reports unknown-vs-known AUROC, AU-PR and FPR@95%%TPR of the max-softmax "
                        "and energy scores, and the closed-set accuracy")
    p.add_argument("--unknown", nargs="+", metavar="T",
                   help="--open-set: hold out only these defect types, each in turn (implies --open-set)")


register_task(TaskEntry(
    name="classify",
    help="train a defect classifier with in-loop synthetic defects, every arm against real-only",
    description="For each partition: train the real-only baseline and one arm per --aug (fresh synthetic "
    "defects in every batch) with the same model, schedule and seed; evaluate each on the partition's test "
    "set; write results.json, report.md, summary.png, and per arm model.pt and predictions.csv. Without "
    "--data it writes the toy dataset into OUT/toy-data and uses the tiny preset.",
    add_arguments=add_arguments,
    task="inspect_train.tasks.classify:TASK",
))
