"""`inspect-train detect`: where is each defect, and of which type? Every arm next to the real-only baseline.

The subcommand's flags; the task itself is inspect_train.tasks.detect, imported when the command runs.
"""

from __future__ import annotations

from inspect_train.commands._task_flags import add_task_arguments
from inspect_train.settings import DetectSettings
from inspect_train.tasks.registry import TaskEntry, register_task


def add_arguments(p) -> None:
    add_task_arguments(p, "detect", "detect-tiny", "detect-256",
                       model_help="fcos, retinanet or fasterrcnn (preset default: fcos)", settings_class=DetectSettings)


register_task(TaskEntry(
    name="detect",
    help="train a defect detector (FCOS, RetinaNet, Faster R-CNN) with in-loop synthetic defects",
    description="For each partition: train the real-only baseline and one arm per --aug on the base set's "
    "real defects, train/good and fresh synthetic defects every batch, with the same model, schedule and "
    "seed; boxes come from the masks (one per 8-connected component, or per group of pieces with --box-join, "
    "labelled with the defect type). "
    "Evaluate each on the partition's test set (COCO mAP@0.5 and mAP@0.5:0.95 per defect type and mean, "
    "image-level defect recall at a fixed false-positive rate on test/good, image AUROC). Without --data it "
    "runs on the built-in toy dataset with the tiny preset.",
    add_arguments=add_arguments,
    task="inspect_train.tasks.detect:TASK",
))
