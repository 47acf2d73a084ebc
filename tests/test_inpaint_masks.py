"""Inpaint masks: deformed copies keep their family (thin stays thin, areas stay close), are fresh, seeded, on the
device, keep border defects on the border; user mask folders are read, resized and refused when unusable."""

import numpy as np
import pytest
import torch
from PIL import Image

from generators.classic.geometry import mask_bbox
from generators.inpaint.masks import (BaseMasks, DeformOptions, FolderMasks, deform, describe_masks, fit_masks,
                                      read_mask_folder)
from inspect_train.errors import InputError


def rng(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def line_and_blob(size=32):
    masks = torch.zeros(2, 1, size, size)
    masks[0, 0, size // 3, 4:size - 6] = 1  # a 1-pixel scratch
    masks[1, 0, 8:18, 9:21] = 1  # a blob
    return masks


def test_a_thin_line_stays_thin_and_areas_stay_close():
    source = line_and_blob()
    copies = deform(source[[0] * 100 + [1] * 100], rng(1), DeformOptions())
    stats, src = describe_masks(copies), describe_masks(source)
    line, blob = slice(0, 100), slice(100, 200)
    assert src["minor"][0] == 0 and (stats["minor"][line] <= 2.0).all(), "a 1-pixel line stays at most ~2 wide"
    assert stats["major"][line].min() > 0.5 * src["major"][0], "and keeps most of its length"
    for part, k in ((line, 0), (blob, 1)):
        ratio = stats["area"][part] / src["area"][k]
        assert (ratio >= 0.4).all() and (ratio <= 2.5).all(), (k, ratio.min(), ratio.max())
    assert (stats["minor"][blob] > 4).all(), "a blob stays a blob"
    assert len({tuple(m.flatten().nonzero().flatten().tolist()) for m in copies[line]}) > 50, "copies differ"


def test_deform_is_seeded_binary_and_on_the_device():
    source = line_and_blob()
    a = deform(source, rng(3), DeformOptions())
    b = deform(source, rng(3), DeformOptions())
    c = deform(source, rng(4), DeformOptions())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.dtype == torch.float32 and a.device.type == "cpu"
    assert (a.flatten(1).sum(1) > 0).all()


def test_border_defects_stay_on_their_border():
    edge = torch.zeros(1, 1, 32, 32)
    edge[0, 0, 0:12, 14:16] = 1  # a crack running in from the top edge
    copies = deform(edge.repeat(100, 1, 1, 1), rng(2), DeformOptions())
    y0, y1, x0, x1 = mask_bbox(copies)
    assert ((y0 == 0) | (y1 == 31) | (x0 == 0) | (x1 == 31)).all()
    free = deform(edge.repeat(100, 1, 1, 1), rng(2), DeformOptions(keep_edges=False))
    y0, y1, x0, x1 = mask_bbox(free)
    assert not ((y0 == 0) | (y1 == 31) | (x0 == 0) | (x1 == 31)).all(), "without keep_edges it may move inward"


def test_no_turns_keeps_orientation():
    horizontal = torch.zeros(1, 1, 32, 32)
    horizontal[0, 0, 10, 4:28] = 1
    copies = deform(horizontal.repeat(50, 1, 1, 1), rng(5), DeformOptions(turns=False))
    y0, y1, x0, x1 = mask_bbox(copies)
    assert ((x1 - x0) > (y1 - y0)).all(), "without quarter turns a horizontal scratch stays horizontal"


def test_base_masks_source_and_bad_options():
    source = BaseMasks({"scratch": line_and_blob(64)[:1].bool()}, 32, "cpu", DeformOptions())
    r = rng(0)
    a, b = source.draw(6, "scratch", r), source.draw(6, "scratch", r)
    assert a.shape == (6, 1, 32, 32) and not torch.equal(a, b), "fresh masks every draw"
    assert (describe_masks(a)["minor"] <= 2.0).all(), "a line shrunk from 64 to 32 pixels is still a line"
    with pytest.raises(InputError, match="no base masks"):
        source.draw(1, "hole", r)
    with pytest.raises(InputError, match="unknown option"):
        DeformOptions.from_config({"twist": 1})
    with pytest.raises(InputError, match="scale"):
        DeformOptions.from_config({"scale": [1.5, 0.5]})


def test_fit_masks_keeps_thin_lines_when_shrinking():
    thin = torch.zeros(1, 1, 64, 64)
    thin[0, 0, 31, 5:60] = 1  # an odd row: nearest-neighbour halving drops it
    assert fit_masks(thin, 32).sum() > 0


def write_mask(path, size, box):
    arr = np.zeros(size, dtype=np.uint8)
    y0, y1, x0, x1 = box
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr).save(path)


def test_mask_folder_resized_not_refused(tmp_path):
    write_mask(tmp_path / "a.png", (32, 32), (4, 10, 4, 20))
    write_mask(tmp_path / "b.png", (50, 80), (10, 40, 30, 50))  # another size, not square
    names, masks = read_mask_folder(tmp_path, 32)
    assert names == ["a.png", "b.png"] and masks.shape == (2, 1, 32, 32) and (masks.flatten(1).sum(1) > 0).all()
    source = FolderMasks(tmp_path, 32, "cpu", DeformOptions())
    assert source.draw(3, "any", rng()).shape == (3, 1, 32, 32)


def test_mask_folder_bad_input(tmp_path):
    with pytest.raises(InputError, match="no mask PNGs"):
        read_mask_folder(tmp_path, 32)
    write_mask(tmp_path / "empty.png", (32, 32), (0, 0, 0, 0))
    with pytest.raises(InputError, match="empty"):
        read_mask_folder(tmp_path, 32)
    with pytest.raises(InputError, match="not found"):
        read_mask_folder(tmp_path / "nope", 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_masks_on_cuda():
    source = BaseMasks({"scratch": line_and_blob().bool()}, 32, "cuda", DeformOptions())
    masks = source.draw(4, "scratch", rng(device="cuda"))
    assert masks.is_cuda and masks.shape == (4, 1, 32, 32)
