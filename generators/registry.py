"""Every defect source by its `--aug` name, listed once: `create_generator` builds one from a category's data
and one partition's base set.

Only the base-set images named in `base_names` (and train/good) are handed to
a generator, so no test image of the protocol can reach one. `AUGS` adds the two arms that draw no synthetic
sample: `none` (real only, the baseline) and `classic` (flips, turns and colour jitter on the real images).
"""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

from inspect_train.errors import InputError

if TYPE_CHECKING:  # the CLI reads the names below without importing torch
    import torch

    from inspect_train.data.category import CategoryData

GENERATORS = ("crop-paste", "cut-paste", "perlin", "dfmgan", "inpaint")
REAL_ONLY = ("none", "classic")
AUGS = (*REAL_ONLY, *GENERATORS)


def base_sets(data: "CategoryData", base_names: dict[str, list[str]]) -> dict:
    """The ImageSets of each defect type restricted to the partition's base names."""
    unknown = sorted(set(base_names) - set(data.defects))
    if unknown:
        raise InputError(f"defect type(s) {unknown} are not in the data ({data.defect_types})")
    return {t: data.defects[t].select(names) for t, names in base_names.items()}


def create_generator(
    name: str,
    data: "CategoryData",
    base_names: dict[str, list[str]],
    device: "str | torch.device" = "cpu",
    checkpoints: dict[str, Path] | None = None,
    **options,
):
    """A DefectGenerator for `name` (one of GENERATORS).

    options: cut-paste `shape` ("mask"|"rect"), `jitter`; perlin `texture` ("good"|"self"|"defect"),
    `beta`, `scales`; dfmgan `checkpoints` {defect type: stage-2 checkpoint} and `truncation`; inpaint
    `checkpoints` {defect type: painter checkpoint}, `mask_source` ("base" | "dfmgan" | a folder of PNG masks),
    `mask_checkpoints` (the DFMGAN ones, for "dfmgan") and `mask_options` (deformation overrides).
    """
    if name == "crop-paste":
        from generators.classic.crop_paste import CropPasteGenerator

        return CropPasteGenerator(base_sets(data, base_names), data.train_good, device, **options)
    if name == "cut-paste":
        from generators.classic.cut_paste import CutPasteGenerator

        return CutPasteGenerator(data.train_good, list(base_names), base_sets(data, base_names), device, **options)
    if name == "perlin":
        from generators.classic.perlin import PerlinGenerator

        return PerlinGenerator(data.train_good, list(base_names), base_sets(data, base_names), device, **options)
    if name == "dfmgan":
        if not checkpoints:
            raise InputError("the dfmgan generator needs one stage-2 checkpoint per defect type")
        missing = sorted(set(base_names) - set(checkpoints))
        if missing:
            raise InputError(f"no DFMGAN checkpoint for defect type(s) {missing}")
        from generators.dfmgan.api import DFMGANGenerator

        return DFMGANGenerator({t: Path(checkpoints[t]) for t in base_names}, device=device, **options)
    if name == "inpaint":
        if not checkpoints:
            raise InputError("the inpaint generator needs one painter checkpoint per defect type")
        missing = sorted(set(base_names) - set(checkpoints))
        if missing:
            raise InputError(f"no inpaint painter for defect type(s) {missing}")
        from generators.inpaint.api import build_inpaint_generator

        return build_inpaint_generator({t: Path(checkpoints[t]) for t in base_names}, data.train_good,
                                       base_sets(data, base_names), device, **options)
    raise InputError(f"unknown generator '{name}' (choose from {', '.join(GENERATORS)})")
