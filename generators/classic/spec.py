"""The classic generators' declarations: built per partition from its base set and train/good, nothing trained."""

from __future__ import annotations

from generators.classic.crop_paste import CropPasteGenerator
from generators.classic.cut_paste import CutPasteGenerator
from generators.classic.perlin import PerlinGenerator
from generators.registry import register_generator
from generators.spec import BuildRequest, GeneratorSpec, Option


@register_generator
def crop_paste() -> GeneratorSpec:
    def build(request: BuildRequest) -> CropPasteGenerator:
        return CropPasteGenerator(request.base_sets(), request.data.train_good, request.device, **request.options)

    return GeneratorSpec("crop-paste", "a base-set defect cut out by its mask and pasted on a good image", build)


@register_generator
def cut_paste() -> GeneratorSpec:
    def build(request: BuildRequest) -> CutPasteGenerator:
        return CutPasteGenerator(request.data.train_good, list(request.base_names), request.base_sets(),
                                 request.device, **request.options)

    return GeneratorSpec(
        "cut-paste", "a patch of the good image itself moved into a base-set mask (or a rectangle)", build,
        options=(Option("shape", help="mask (a base-set mask's shape) or rect"),
                 Option("jitter", type=float, help="brightness jitter of the moved patch")))


@register_generator
def perlin() -> GeneratorSpec:
    def build(request: BuildRequest) -> PerlinGenerator:
        return PerlinGenerator(request.data.train_good, list(request.base_names), request.base_sets(),
                               request.device, **request.options)

    return GeneratorSpec(
        "perlin", "DRAEM-style Perlin-noise masks filled with a foreign texture", build,
        options=(Option("texture", help="good, self or defect: where the texture comes from"),
                 Option("beta", help="blend range [low, high]"), Option("scales", help="Perlin scale range")))
