"""`inspect-train segment`: where is the defect? Every arm next to the real-only baseline, per partition.

The subcommand's flags; the task itself is inspect_train.tasks.segment, imported when the command runs.
"""

from __future__ import annotations

from inspect_train.commands._task_flags import add_task_arguments
from inspect_train.settings import SegmentSettings
from inspect_train.tasks.registry import TaskEntry, register_task


def add_arguments(p) -> None:
    add_task_arguments(p, "segment", "segment-tiny", "segment-256",
                       model_help="unet, deeplabv3, draem or destseg (preset default: unet)", settings_class=SegmentSettings)


register_task(TaskEntry(
    name="segment",
    help="train a defect segmenter (U-Net, DeepLabV3, DRAEM, DeSTSeg) with in-loop synthetic defects",
    description="For each partition: train the real-only baseline and one arm per --aug on the base set's "
    "real defects, train/good and fresh synthetic defects every batch, with the same model, schedule and "
    "seed; evaluate each on the partition's test set (pixel AP/AUROC, AUPRO@30%%FPR, image AUROC/AP, pixel "
    "F1 max). Without --data it runs on the built-in toy dataset with the tiny preset.",
    add_arguments=add_arguments,
    task="inspect_train.tasks.segment:TASK",
))
