"""`inspect-train generate` and the in-loop sampler: files, binary masks, paired goods, COCO/YOLO boxes."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from generators.dfmgan.api import DFMGANGenerator, fit_backbone, fit_defect, load_config
from inspect_train.boxes import components_boxes
from generators.dfmgan.networks import Generator
from generators.dfmgan.checkpoint import load_checkpoint
from inspect_train.cli import main
from inspect_train.data.category import load_category


@pytest.fixture(scope="module")
def checkpoints(toy_root, tmp_path_factory):
    toy = load_category(toy_root, "toy", size=(32, 32))
    out = tmp_path_factory.mktemp("gen_ckpt")
    bb = fit_backbone(toy.train_good.images[:32], load_config("dfmgan-tiny"), out, steps=2, progress=False)
    return {d: fit_defect(bb, toy.defects[d].images[:4], toy.defects[d].masks[:4], d, out, steps=2, progress=False)
            for d in ("hole", "stain")}


def test_sampler_batch(checkpoints):
    gen = DFMGANGenerator(checkpoints)
    assert gen.defect_types == ["hole", "stain"] and gen.channels == 3 and gen.resolution == 32
    batch = gen.sample(5, "stain", torch.Generator().manual_seed(0))
    assert batch.images.shape == batch.goods.shape == (5, 3, 32, 32)
    assert batch.masks.shape == (5, 1, 32, 32)
    assert set(batch.masks.unique().tolist()) <= {0.0, 1.0}
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    assert batch.labels.tolist() == [1] * 5
    again = gen.sample(5, "stain", torch.Generator().manual_seed(0))
    assert torch.equal(batch.images, again.images) and torch.equal(batch.masks, again.masks)


def test_sampler_good_is_the_backbone_image(checkpoints):
    """The paired good image must be exactly what the frozen backbone makes from the same z and noise."""
    state = load_checkpoint(checkpoints["hole"])
    G = Generator(state["config"], state["channels"])
    G.add_defect_modules()
    G.load_state_dict(state["G_ema"])
    batch = DFMGANGenerator({"hole": checkpoints["hole"]}).sample(4, "hole", torch.Generator().manual_seed(9))
    rng = torch.Generator().manual_seed(9)
    z = torch.randn(4, G.z_dim, generator=rng)
    torch.randn(4, G.z_dim, generator=rng)  # z_defect, drawn second
    with torch.no_grad():
        good = G.synthesize(G.mapping(z), G.make_noise(4, "cpu", rng))
    torch.testing.assert_close(batch.goods, (good.clamp(-1, 1) + 1) / 2, atol=1e-5, rtol=0)


def test_truncation_acts_on_the_defect_code_only(checkpoints):
    """As in the reference: psi pulls the defect code towards its mean; the part (object code) is never truncated,
    so the paired good images at psi 0 are those at psi 1."""
    full = DFMGANGenerator(checkpoints).sample(4, "hole", torch.Generator().manual_seed(3))
    typical = DFMGANGenerator(checkpoints, truncation=0.0).sample(4, "hole", torch.Generator().manual_seed(3))
    assert torch.equal(full.goods, typical.goods)
    assert not torch.equal(full.images, typical.images)


def test_components_boxes_handcrafted():
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:3, 1:4] = True      # 3 wide, 2 high
    mask[5:9, 8] = True        # 1 wide, 4 high
    mask[9, 9] = True          # touches the previous one diagonally: same component
    assert sorted(components_boxes(mask)) == [(1, 1, 3, 2), (8, 5, 2, 5)]
    assert components_boxes(np.zeros((4, 4), bool)) == []


def _read_mask(path):
    arr = np.asarray(Image.open(path))
    assert set(np.unique(arr).tolist()) <= {0, 255}
    return arr > 0


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_generate_writes_what_it_says(checkpoints, tmp_path, fmt, capsys):
    out = tmp_path / "synth"
    argv = ["generate", "--n", "6", "--out", str(out), "--seed", "3", "--format", fmt, "--batch", "4",
            "--device", "cpu"]
    for path in checkpoints.values():
        argv += ["--checkpoint", str(path)]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 12
    assert [r["defect_type"] for r in rows] == ["hole"] * 6 + ["stain"] * 6
    total_boxes = 0
    coco = json.loads((out / "annotations.json").read_text()) if fmt == "coco" else None
    for i, row in enumerate(rows):
        image = Image.open(out / row["image"])
        good = Image.open(out / row["good"])
        assert image.size == good.size == (32, 32) and image.mode == good.mode == "RGB"
        mask = _read_mask(out / row["mask"])
        assert int(row["mask_pixels"]) == int(mask.sum())
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        expected = []
        for sl in ndimage.find_objects(labels):
            expected.append((sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start))
        total_boxes += count
        if fmt == "coco":
            got = [tuple(a["bbox"]) for a in coco["annotations"] if a["image_id"] == i]
            assert sorted(got) == sorted(expected)
            assert all(a["category_id"] == int(row["label"]) for a in coco["annotations"] if a["image_id"] == i)
        else:
            lines = (out / "labels" / (row["image"].split("/")[-1][:-4] + ".txt")).read_text().split()
            values = np.array(lines, dtype=float).reshape(-1, 5)
            assert len(values) == count
            want = sorted((int(row["label"]), (x + w / 2) / 32, (y + h / 2) / 32, w / 32, h / 32)
                          for x, y, w, h in expected)
            np.testing.assert_allclose(sorted(map(tuple, values)), want, atol=1e-5)
    assert total_boxes > 0, "no mask pixels in any sample: the box check would be vacuous"
    if fmt == "coco":
        assert [c["name"] for c in coco["categories"]] == ["hole", "stain"]
    else:
        assert (out / "classes.txt").read_text().split() == ["hole", "stain"]


def test_generate_box_join_writes_the_joined_boxes(checkpoints, tmp_path, capsys):
    out = tmp_path / "joined"
    argv = ["generate", "--n", "6", "--out", str(out), "--seed", "3", "--format", "coco", "--box-join", "2",
            "--device", "cpu", "--checkpoint", str(checkpoints["hole"])]
    assert main(argv) == 0
    coco = json.loads((out / "annotations.json").read_text())
    rows = list(csv.DictReader(open(out / "index.csv")))
    masks = [_read_mask(out / row["mask"]) for row in rows]
    for i, mask in enumerate(masks):
        got = sorted(tuple(a["bbox"]) for a in coco["annotations"] if a["image_id"] == i)
        assert got == sorted(components_boxes(mask, join=2))
    assert any(components_boxes(m, join=2) != components_boxes(m) for m in masks), "no mask the join changes"
    assert main(argv[:-4] + ["--box-join", "-1", "--checkpoint", str(checkpoints["hole"])]) == 2
    assert "--box-join must be 0 or a positive integer (got -1)" in capsys.readouterr().err
