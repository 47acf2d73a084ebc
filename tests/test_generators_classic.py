"""Classic generators and augmentation: shapes, masks, determinism, freshness, base-set only, device."""

import pytest
import torch

from generators.registry import create_generator
from generators.classic.augment import classic_augment
from generators.classic.geometry import mask_bbox, shift_inside
from inspect_train.data.category import load_category
from inspect_train.errors import InputError

NAMES = ("crop-paste", "cut-paste", "perlin")


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def base(toy):
    return {t: toy.defects[t].names[:4] for t in toy.defect_types}


def rng(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("name", NAMES)
def test_batches_are_valid_fresh_and_reproducible(toy, base, name):
    gen = create_generator(name, toy, base)
    assert gen.defect_types == sorted(base)
    r = rng()
    a = gen.sample(6, "scratch", r)
    b = gen.sample(6, "scratch", r)
    assert a.images.shape == (6, 3, 32, 32) and a.masks.shape == (6, 1, 32, 32)
    assert a.images.dtype == torch.float32 and 0 <= a.images.min() and a.images.max() <= 1
    assert set(a.masks.unique().tolist()) <= {0.0, 1.0}
    assert (a.masks.flatten(1).sum(1) > 0).all(), "every synthetic defect has a mask"
    assert a.labels.tolist() == [gen.defect_types.index("scratch")] * 6
    assert not torch.equal(a.images, b.images), "consecutive draws must differ"
    again = create_generator(name, toy, base).sample(6, "scratch", rng())
    assert torch.equal(a.images, again.images) and torch.equal(a.masks, again.masks)
    # Outside the mask the sample is its paired good image.
    outside = a.masks == 0
    assert torch.equal((a.images * outside), (a.goods * outside))


def test_crop_paste_pastes_base_defect_pixels(toy, base):
    gen = create_generator("crop-paste", toy, base)
    assert gen.source_names == base, "only base-set images reach the generator"
    batch = gen.sample(8, "hole", rng(3))
    # Defect area is preserved: the pasted mask has as many pixels as one of the base masks.
    areas = {int(m.sum()) for m in toy.defects["hole"].select(base["hole"]).masks}
    assert all(int(m.sum()) in areas for m in batch.masks)
    inside = batch.masks.bool().expand_as(batch.images)
    assert not torch.equal(batch.images[inside], batch.goods[inside])


def test_cut_paste_shapes(toy, base):
    rect = create_generator("cut-paste", toy, base, shape="rect").sample(5, "stain", rng())
    ys, xs = rect.masks[:, 0].any(2), rect.masks[:, 0].any(1)
    assert torch.equal(rect.masks[:, 0].sum((1, 2)), ys.sum(1) * xs.sum(1)), "rect masks are rectangles"
    with pytest.raises(InputError, match="shape"):
        create_generator("cut-paste", toy, base, shape="star")


def test_perlin_textures(toy, base):
    for texture in ("good", "self", "defect"):
        batch = create_generator("perlin", toy, base, texture=texture).sample(4, "hole", rng())
        assert (batch.masks.flatten(1).sum(1) > 0).all()
    with pytest.raises(InputError, match="texture"):
        create_generator("perlin", toy, base, texture="wood")


def test_unknown_generator_and_type(toy, base):
    with pytest.raises(InputError, match="unknown generator"):
        create_generator("gan9000", toy, base)
    with pytest.raises(InputError, match="not one of"):
        create_generator("crop-paste", toy, base).sample(2, "dent", rng())
    with pytest.raises(InputError, match="not in the data"):
        create_generator("crop-paste", toy, {"dent": ["x.png"]})


def test_shift_inside_never_cuts_a_mask():
    mask = torch.zeros(16, 1, 20, 20)
    mask[:, :, 2:9, 11:19] = 1
    moved = shift_inside(mask, mask, rng(1))
    assert torch.equal(moved.flatten(1).sum(1), mask.flatten(1).sum(1))
    y0, y1, x0, x1 = mask_bbox(moved)
    assert ((y1 - y0) == 6).all() and ((x1 - x0) == 7).all()
    assert len({(int(a), int(b)) for a, b in zip(y0, x0)}) > 1


def test_classic_augment_moves_masks_with_pixels():
    images = torch.rand(8, 3, 16, 16) * 0.5
    masks = torch.zeros(8, 1, 16, 16)
    masks[:, :, 1:4, 2:9] = 1
    images = images + 0.5 * masks  # defect pixels are the bright ones
    out, out_masks = classic_augment(images, masks, rng(0), brightness=0.0, contrast=0.0)
    assert torch.equal(out_masks.flatten(1).sum(1), masks.flatten(1).sum(1))
    assert ((out >= 0.5) == out_masks.bool()).all()
    assert not torch.equal(out_masks, masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_generators_run_on_cuda(toy, base):
    for name in NAMES:
        batch = create_generator(name, toy, base, device="cuda").sample(3, "hole", rng(device="cuda"))
        assert batch.images.is_cuda and batch.masks.is_cuda and batch.labels.is_cuda
