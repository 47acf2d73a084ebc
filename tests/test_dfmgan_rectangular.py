"""DFMGAN at H x W (a long part such as Kolektor's 192x64): config rule, network shapes, both stages, sampling,
export, the CLI and the task cache; square configs and checkpoints as before. Tiny sizes: 32x16 and 16x48."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generators.dfmgan.api import DFMGANGenerator, fit_backbone, fit_defect, load_config
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.config import check_config, resolution_hw, size_for_aspect, with_resolution
from generators.dfmgan.networks import Generator, build_discriminator, build_dmatch, channels_at
from inspect_train.cli import main
from inspect_train.data.category import load_category
from inspect_train.errors import InputError

SIZE = (32, 16)  # H x W: taller than wide, short side 16


@pytest.fixture(scope="module")
def tiny():
    return load_config("dfmgan-tiny")


@pytest.fixture(scope="module")
def rect_config(tiny):
    return with_resolution(tiny, "32x16")


@pytest.fixture(scope="module")
def rect_toy(toy_root):
    return load_category(toy_root, "toy", size=SIZE)


@pytest.fixture(scope="module")
def rect_checkpoints(rect_toy, rect_config, tmp_path_factory):
    """A 32x16 backbone and a 'hole' stage-2 checkpoint on top of it, 2 steps each."""
    out = tmp_path_factory.mktemp("rect")
    backbone = fit_backbone(rect_toy.train_good.images[:16], rect_config, out / "bb", steps=2, progress=False)
    hole = rect_toy.defects["hole"]
    defect = fit_defect(backbone, hole.images[:5], hole.masks[:5], "hole", out / "s2", config=rect_config, steps=2,
                        progress=False)
    return backbone, defect


def test_resolution_forms_and_the_shape_rule(tiny):
    """N, 'HxW' and [H, W] mean one size; the short side is the level (res_start keeps its ratio to it); a shape the
    levels cannot hold is one clear InputError."""
    assert resolution_hw({"resolution": 32}) == (32, 32)
    assert resolution_hw({"resolution": "192x64"}) == resolution_hw({"resolution": [192, 64]}) == (192, 64)
    assert tiny["resolution"] == 32 and tiny["res_start"] == 16  # a square preset loads as before
    wide = with_resolution(tiny, (16, 48))
    assert wide["resolution"] == "16x48" and wide["res_start"] == 8
    assert with_resolution(tiny, "64")["resolution"] == 64 and with_resolution(tiny, 64)["res_start"] == 32
    assert with_resolution(load_config("dfmgan-64"), "192x64")["res_start"] == load_config("dfmgan-64")["res_start"]
    bad = {"24x32": "short side 24 must be a power of two", "34x16": "multiples of 4", "16x4": "short side 4",
           "48": "resolution 48 must be a power of two", "tall": "is not N, 'HxW' or \\[H, W\\]"}
    for value, message in bad.items():
        with pytest.raises(InputError, match=message):
            with_resolution(tiny, value)
    with pytest.raises(InputError, match="res_start 32 must be a power of two between 8 and the resolution's short"):
        check_config({**tiny, "resolution": "64x16", "res_start": 32})


def test_task_aspect_sizes():
    """The preset's resolution becomes the short side; the long side is rounded to a multiple of a quarter of it."""
    assert size_for_aspect(64, (192, 64)) == (192, 64)
    assert size_for_aspect(32, (48, 16)) == (96, 32)
    assert size_for_aspect(32, (16, 48)) == (32, 96)
    assert size_for_aspect(64, (300, 500)) == (64, 112)  # 106.7 -> 112, the nearest multiple of 16
    assert size_for_aspect(64, (256, 256)) == (64, 64)


@pytest.mark.parametrize("size", [(32, 16), (16, 48)])
def test_generator_and_discriminators_at_hw(tiny, size):
    """Const, noise maps, images and masks at the aspect (autograd and sampling paths); D and D_match take H x W."""
    config = with_resolution(tiny, size)
    torch.manual_seed(0)
    G = Generator(config, 3)
    G.add_defect_modules()
    short = min(size)
    assert tuple(G.blocks[0].const.shape[1:]) == (4 * size[0] // short, 4 * size[1] // short)
    n = 4
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(1))
    for r, maps in noise.items():
        assert all(tuple(t.shape[2:]) == G.level_size(abs(r)) for t in maps)
    z, zd = torch.randn(n, G.z_dim), torch.randn(n, G.z_dim)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            image = G.synthesize(G.mapping(z), noise)
            defect, mask, good = G.synthesize_defect(G.mapping(z), G.defect_mapping(zd), noise)
        assert image.shape == defect.shape == good.shape == (n, 3, *size)
        assert mask.shape == (n, 1, *size)
    D, Dm = build_discriminator(config, 3), build_dmatch(config, 3)
    assert D(image).shape == Dm(torch.cat([image, torch.tanh(10 * mask)], 1)).shape == (n,)
    assert D.size == tuple(size) and D.resolution == short


def test_square_layout_is_unchanged(tiny):
    """A square config keeps the 4x4 const and D's fc on ch(4) x 16 inputs: the shapes old checkpoints hold."""
    G = Generator(tiny, 3)
    D = build_discriminator(tiny, 3)
    assert tuple(G.blocks[0].const.shape[1:]) == (4, 4) and G.size == (32, 32) and G.resolution == 32
    width = channels_at(4, int(tiny["d_channel_base"]), int(tiny["d_channel_max"]))
    assert D.fc.weight.shape[1] == width * 16


def test_both_stages_train_and_sample_at_hw(rect_checkpoints, rect_toy, tmp_path):
    backbone, defect = rect_checkpoints
    assert load_checkpoint(backbone)["resolution"] == load_checkpoint(defect)["resolution"] == "32x16"
    generator = DFMGANGenerator({"hole": defect})
    assert generator.size == SIZE and generator.resolution == "32x16"
    batch = generator.sample(3, "hole", torch.Generator().manual_seed(0))
    assert batch.images.shape == batch.goods.shape == (3, rect_toy.channels, *SIZE)
    assert batch.masks.shape == (3, 1, *SIZE)
    square = load_category(rect_toy.index.root, "toy", size=(32, 32))
    with pytest.raises(InputError, match=r"images are 32x32 \(HxW\), the config needs 32x16"):
        fit_defect(backbone, square.defects["hole"].images[:2], square.defects["hole"].masks[:2], "hole",
                   tmp_path, steps=0, progress=False)


def test_square_checkpoint_keeps_loading(toy_root, tiny, tmp_path):
    """A square run stores its resolution as the int it always did, and a checkpoint in that form (config and
    top-level `resolution` ints, as every checkpoint before rectangles) loads, trains stage 2 and samples."""
    toy = load_category(toy_root, "toy", size=(32, 32))
    backbone = fit_backbone(toy.train_good.images[:8], tiny, tmp_path / "bb", steps=1, progress=False)
    state = load_checkpoint(backbone)
    assert state["resolution"] == 32 and state["config"]["resolution"] == 32
    old = tmp_path / "old_backbone.pt"
    torch.save({**state, "resolution": 32, "config": {**state["config"], "resolution": 32}}, old)
    hole = toy.defects["hole"]
    defect = fit_defect(old, hole.images[:4], hole.masks[:4], "hole", tmp_path / "s2", steps=1, progress=False)
    assert load_checkpoint(defect)["resolution"] == 32
    batch = DFMGANGenerator({"hole": defect}).sample(2, "hole", torch.Generator().manual_seed(0))
    assert batch.images.shape == (2, toy.channels, 32, 32) and batch.masks.shape == (2, 1, 32, 32)


def test_boxes_use_width_and_height(tmp_path):
    """COCO sizes and YOLO centres of a 10 (H) x 20 (W) mask: x is divided by W, y by H."""
    from generators.sample_writer import SampleWriter

    mask = torch.zeros(1, 10, 20)
    mask[0, 2:4, 14:18] = 1  # x 14..17, y 2..3
    for fmt in ("coco", "yolo"):
        writer = SampleWriter(tmp_path / fmt, ["hole"], fmt)
        writer.add("hole", torch.rand(3, 10, 20), mask, None)
        writer.finish({})
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert coco["images"][0]["width"] == 20 and coco["images"][0]["height"] == 10
    assert coco["annotations"][0]["bbox"] == [14, 2, 4, 2]
    label, cx, cy, w, h = map(float, (tmp_path / "yolo" / "labels" / "hole_000000.txt").read_text().split())
    np.testing.assert_allclose([cx, cy, w, h], [16 / 20, 3 / 10, 4 / 20, 2 / 10])


def test_generate_writes_hw_samples(rect_checkpoints, tmp_path):
    _, defect = rect_checkpoints
    out = tmp_path / "synth"
    assert main(["generate", "--checkpoint", str(defect), "--n", "2", "--out", str(out), "--format", "coco",
                 "--device", "cpu"]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert all((im["width"], im["height"]) == (16, 32) for im in coco["images"])
    assert Image.open(out / coco["images"][0]["file_name"]).size == (16, 32)  # PIL: (W, H)


def test_evaluate_gen_compares_at_the_generators_hw(rect_checkpoints, toy_root, tmp_path, monkeypatch):
    """Without --resolution, evaluate-gen compares at the DFMGAN generators' H x W, not a square of one side."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no KID/LPIPS weights: skipped
    _, defect = rect_checkpoints
    out = tmp_path / "eval"
    assert main(["evaluate-gen", "--aug", "dfmgan", "--data", str(toy_root), "--category", "toy", "--partition", "1",
                 "--defect", "hole", "--checkpoint", f"hole={defect}", "--n", "4", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resolution"] == [32, 16] and results["sources"][0]["resolution"] == "32x16"


def test_dfmgan_masks_for_a_square_painter(rect_checkpoints):
    """The painter's mask source takes a rectangular DFMGAN's masks to its square side; a thin line that
    shrinking the long side would miss is kept."""
    from generators.inpaint.masks import DFMGANMasks, fit_masks

    _, defect = rect_checkpoints
    masks = DFMGANMasks({"hole": defect}, 16).draw(3, "hole", torch.Generator().manual_seed(0))
    assert masks.shape == (3, 1, 16, 16) and set(masks.unique().tolist()) <= {0.0, 1.0}
    line = torch.zeros(1, 1, 96, 32)
    line[0, 0, 41] = 1  # nearest-neighbour 96 -> 64 samples rows 39, 40, 42: this row is skipped
    assert fit_masks(line, 64).sum() > 0


def test_fit_backbone_cli_takes_hw(toy_root, tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["gan", "fit-backbone", "--data", str(toy_root), "--category", "toy", "--config", "dfmgan-tiny",
                 "--resolution", "32x16", "--steps", "1", "--out", str(out), "--quiet"]) == 0
    assert "at 32x16" in capsys.readouterr().out
    state = load_checkpoint(out / "backbone.pt")
    assert state["resolution"] == "32x16" and state["config"]["res_start"] == 8
    assert main(["gan", "fit-defect", "--backbone", str(out / "backbone.pt"), "--data", str(toy_root), "--category",
                 "toy", "--defect", "hole", "--partition", "1", "--steps", "1", "--out", str(out), "--quiet"]) == 0
    assert load_checkpoint(out / "defect_hole.pt")["resolution"] == "32x16"
    capsys.readouterr()
    assert main(["gan", "fit-backbone", "--data", str(toy_root), "--category", "toy", "--config", "dfmgan-tiny",
                 "--resolution", "34x16", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inspect-train: error:") and "multiples of 4" in err and "\n" not in err


def test_task_cache_trains_at_the_task_aspect(toy_root, tmp_path):
    """A 48x16 task with dfmgan-tiny trains its generators at 96x32 and records that in the index; the folder is
    then refused by name for a square run, and a square folder for a rectangular one."""
    from inspect_train.tasks.generators import open_cache

    task = load_category(toy_root, "toy", size=(48, 16))
    folder = tmp_path / "gens"
    options = {"config": "dfmgan-tiny", "backbone_steps": 1, "defect_steps": 1}
    said = []
    cache = open_cache("dfmgan", task, options, folder, seed=0, device="cpu", manifest_path="m.json", progress=False,
                       say=said.append)
    assert tuple(cache.data.size) == (96, 32) and resolution_hw(cache.config) == (96, 32)
    assert any("96x32" in line for line in said)
    names = task.defects["hole"].names[:3]
    path = cache.checkpoints(1, {"hole": names})["hole"]
    index = json.loads((folder / "index.json").read_text())
    assert index["resolution"] == "96x32" and index["config"] == "dfmgan-tiny"
    assert load_checkpoint(path)["resolution"] == "96x32"
    square = load_category(toy_root, "toy", size=(32, 32))
    with pytest.raises(InputError, match="trained for resolution = '96x32', this run needs 32"):
        open_cache("dfmgan", square, options, folder, seed=0, device="cpu", manifest_path="m.json", say=said.append)
    square_folder = tmp_path / "square"
    square_folder.mkdir()
    (square_folder / "index.json").write_text(json.dumps({**index, "resolution": 32}))
    with pytest.raises(InputError, match="trained for resolution = 32, this run needs '96x32'"):
        open_cache("dfmgan", task, options, square_folder, seed=0, device="cpu", manifest_path="m.json",
                   say=said.append)
