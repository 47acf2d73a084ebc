"""The inpaint painter and its sampler: the composite leaves the good image alone outside mask + band, goods are
real train/good images, draws are fresh, seeded, balanced and on the device; training runs with both losses,
resumes bit for bit, stops on NaN with the last checkpoint intact, and its reconstruction learns; the cache hands
training the partition's base set only and refuses painters trained on another."""

from collections import Counter

import pytest
import torch

from generators.dfmgan.checkpoint import TrainingDiverged
from generators.inpaint.api import build_inpaint_generator, fit_inpaint, load_config
from generators.inpaint.checkpoint import load_painter_checkpoint, painter_from_state
from generators.inpaint.networks import Painter, feather
from generators.inpaint.train import l1_in_region
from generators.registry import create_generator
from inspect_train.data.category import load_category
from inspect_train.errors import InputError
from inspect_train.online import OnlineBatches, RealPool
from inspect_train.protocol import get_partition, make_manifest


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def part(toy):
    return get_partition(make_manifest(toy.index, partitions=2, seed=0), 1)


def base_of(part):
    return {t: split["base"] for t, split in part["defects"].items()}


def tiny(**train):
    config = load_config("inpaint-tiny")
    config["train"].update(train)
    return config


def fit(toy, defect, names, out, steps=2, **kw):
    subset = toy.defects[defect].select(names)
    return fit_inpaint(subset.images, subset.masks, toy.train_good.images, defect, out,
                       config=kw.pop("config", tiny()), steps=steps, progress=False, **kw)


@pytest.fixture(scope="module")
def painters(toy, part, tmp_path_factory):
    out = tmp_path_factory.mktemp("painters")
    return {t: fit(toy, t, names, out / t, steps=3) for t, names in base_of(part).items()}


def rng(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def test_composite_is_the_good_image_outside_mask_and_band():
    torch.manual_seed(0)
    painter = Painter(3, width=4, depth=2, max_width=8, z_dim=4, band=1).eval()
    good = torch.rand(3, 3, 32, 32) * 2 - 1
    mask = torch.zeros(3, 1, 32, 32)
    mask[:, :, 10:14, 5:25] = 1
    with torch.no_grad():
        out, alpha = painter(good, mask, torch.randn(3, 4), torch.randn(3, 1, 32, 32))
    outside = (alpha == 0).expand_as(good)
    assert torch.equal(out[outside], good[outside]), "bit for bit outside mask + band"
    assert (alpha[mask.bool()] == 1).all() and not torch.equal(out[~outside], good[~outside])
    band = (alpha > 0) & (alpha < 1)
    assert band.any() and not (band & mask.bool()).any(), "the blend band lies outside the mask"
    assert torch.equal(feather(mask, 0), mask)


def test_sampler_batches(toy, part, painters):
    gen = create_generator("inpaint", toy, base_of(part), "cpu", checkpoints=painters)
    assert gen.defect_types == sorted(base_of(part))
    r = rng(0)
    a, b = gen.sample(6, "scratch", r), gen.sample(6, "scratch", r)
    assert a.images.shape == a.goods.shape == (6, 3, 32, 32) and a.masks.shape == (6, 1, 32, 32)
    assert a.images.dtype == torch.float32 and 0 <= a.images.min() and a.images.max() <= 1
    assert set(a.masks.unique().tolist()) <= {0.0, 1.0} and (a.masks.flatten(1).sum(1) > 0).all()
    assert a.labels.tolist() == [gen.defect_types.index("scratch")] * 6
    assert not torch.equal(a.images, b.images) and not torch.equal(a.masks, b.masks), "fresh every draw"
    again = create_generator("inpaint", toy, base_of(part), "cpu", checkpoints=painters).sample(6, "scratch", rng(0))
    assert torch.equal(a.images, again.images) and torch.equal(a.masks, again.masks), "seeded"
    # Outside mask + band: exactly the good image; the goods are real train/good images.
    outside = (feather(a.masks, 1) == 0).expand_as(a.images)
    assert torch.equal(a.images[outside], a.goods[outside])
    real_goods = toy.train_good.images.float() / 255
    for good in a.goods:
        assert (real_goods == good).flatten(1).all(1).any(), "each paired good is one train/good image"
    assert a.images.device.type == a.masks.device.type == a.labels.device.type == "cpu"
    # Only base-set masks feed it.
    assert gen.source_names == base_of(part)


def test_sampler_other_mask_sources(toy, part, painters, tmp_path):
    import numpy as np
    from PIL import Image

    arr = np.zeros((40, 40), dtype=np.uint8)
    arr[5:9, 3:30] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    gen = create_generator("inpaint", toy, base_of(part), "cpu", checkpoints=painters, mask_source=str(tmp_path))
    assert gen.sample(3, "hole", rng()).masks.shape == (3, 1, 32, 32)
    with pytest.raises(InputError, match="mask source"):
        create_generator("inpaint", toy, base_of(part), "cpu", checkpoints=painters, mask_source="/nonexistent")
    with pytest.raises(InputError, match="dfmgan"):
        create_generator("inpaint", toy, base_of(part), "cpu", checkpoints=painters, mask_source="dfmgan")
    with pytest.raises(InputError, match="painter"):
        create_generator("inpaint", toy, base_of(part), "cpu", checkpoints={"hole": painters["hole"]})


def test_balance_over_types_in_the_online_batches(toy, part, painters):
    classes = sorted(base_of(part))
    gen = create_generator("inpaint", toy, base_of(part), "cpu", checkpoints=painters)
    it = OnlineBatches(RealPool(toy, base_of(part), classes, "cpu"), gen, batch_size=10, synthetic_ratio=0.5, seed=0)
    syn = Counter()
    for _ in range(6):
        batch = next(it)
        syn.update(batch.labels[batch.synthetic].tolist())
    assert set(syn) == {0, 1, 2} and max(syn.values()) - min(syn.values()) <= 1 and sum(syn.values()) == 30
    assert batch.synthetic_goods is not None and batch.synthetic_goods.shape == (5, 3, 32, 32)


@pytest.mark.parametrize("loss", ["nsgan", "r3gan"])
def test_both_losses_train_with_finite_losses(toy, part, tmp_path, loss):
    names = base_of(part)["hole"]
    path = fit(toy, "hole", names, tmp_path, steps=3, loss=loss, config=tiny(r1_interval=2, log_every=1))
    state = load_painter_checkpoint(path)
    assert state["step"] == 3 and state["loss"] == loss and state["defect_type"] == "hole"
    for tensor in state["painter"].values():
        assert torch.isfinite(tensor).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "tb").iterdir()))).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"inpaint/rec", "inpaint/G", "inpaint/D", "inpaint/R1"} <= tags
    assert ("inpaint/R2" in tags) == (loss == "r3gan")
    for tag in tags:
        assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars(tag)), tag
    assert events.Tags()["images"] == ["inpaint/good|mask|painted|real"]


def test_resume_is_exact(toy, part, tmp_path):
    names = base_of(part)["stain"]
    config = tiny(r1_interval=2, save_every=1000, grid_every=1000)
    whole = load_painter_checkpoint(fit(toy, "stain", names, tmp_path / "a", steps=4, loss="r3gan", config=config))
    fit(toy, "stain", names, tmp_path / "b", steps=2, loss="r3gan", config=config)
    resumed = load_painter_checkpoint(fit(toy, "stain", names, tmp_path / "b", steps=4, config=config, resume=True))
    assert resumed["step"] == whole["step"] == 4 and resumed["loss"] == "r3gan"
    for part_name in ("painter", "painter_ema", "D_local", "D_match"):
        for key, value in whole[part_name].items():
            assert torch.equal(value, resumed[part_name][key]), (part_name, key)
    assert str(whole["opt_G"]["state"]) == str(resumed["opt_G"]["state"])
    with pytest.raises(InputError, match="loss"):
        fit(toy, "stain", names, tmp_path / "b", steps=5, config=config, resume=True, loss="nsgan")


def test_nan_stops_with_the_last_checkpoint_intact(toy, part, tmp_path, monkeypatch):
    import generators.inpaint.train as train

    names = base_of(part)["stain"]
    path = fit(toy, "stain", names, tmp_path, steps=2)
    before = path.read_bytes()
    monkeypatch.setattr(train, "l1_in_region", lambda *a: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match="step 2.*last good checkpoint"):
        fit(toy, "stain", names, tmp_path, steps=4, resume=True)
    assert path.read_bytes() == before


def test_reconstruction_alone_learns_the_defects(toy, part, tmp_path):
    """Hiding the defect of a training image and painting it back must get better with training."""
    names = base_of(part)["stain"]
    config = tiny(local_weight=0.0, match_weight=0.0, ms_weight=0.0, lr=0.002)
    subset = toy.defects["stain"].select(names)
    real, masks = subset.images.float() / 127.5 - 1, subset.masks.float()

    def l1(steps):
        painter = painter_from_state(load_painter_checkpoint(fit(toy, "stain", names, tmp_path / str(steps),
                                                                 steps=steps, config=config)))
        g = torch.Generator().manual_seed(0)
        z = torch.randn(len(names), painter.z_dim, generator=g)
        noise = torch.randn(len(names), painter.noise_channels, 32, 32, generator=g)
        with torch.no_grad():
            out, alpha = painter(real, masks, z, noise)
        return float(l1_in_region(out, real, (alpha > 0).float()))

    before, after = l1(0), l1(60)
    assert after < 0.5 * before, (before, after)


def test_cache_trains_on_the_base_set_only_and_refuses_another(toy_root, toy, tmp_path, monkeypatch):
    import generators.inpaint.api as api
    from inspect_train.tasks.generators import open_cache

    handed = {}
    real_fit = api.fit_inpaint

    def spy(images, masks, goods, defect, out, **kw):
        handed[defect] = (images.clone(), goods.clone(), kw["extra"])
        return real_fit(images, masks, goods, defect, out, **kw)

    monkeypatch.setattr(api, "fit_inpaint", spy)
    manifest = make_manifest(toy.index, partitions=3, seed=0)
    part = get_partition(manifest, 2)
    base = base_of(part)
    cache = open_cache("inpaint", toy, {"steps": 1}, tmp_path, seed=0, device="cpu", manifest_path="m.json",
                       progress=False, say=lambda m: None)
    assert cache.config["name"] == "inpaint-tiny"
    checkpoints = cache.checkpoints(2, base)
    index = cache.index["defects"]["p2"]
    for defect, names in base.items():
        images, goods, extra = handed[defect]
        assert torch.equal(images, toy.defects[defect].select(names).images), "exactly the base images"
        tests = toy.defects[defect].select(part["defects"][defect]["test"]).images
        assert not any(torch.equal(img, t) for img in images for t in tests), "no test image"
        assert torch.equal(goods, toy.train_good.images)
        assert extra["base"] == names and index[defect]["base"] == sorted(names)
        assert load_painter_checkpoint(checkpoints[defect])["base"] == names
        assert cache.trained_on[(2, defect)] == names
    handed.clear()
    again = open_cache("inpaint", toy, {"steps": 1}, tmp_path, seed=0, device="cpu", manifest_path="m.json",
                       progress=False, say=lambda m: None)
    assert again.checkpoints(2, base) == checkpoints and not handed, "reused, not retrained"
    other = get_partition(make_manifest(toy.index, partitions=3, seed=7), 2)
    with pytest.raises(InputError, match="another base set"):
        again.checkpoints(2, base_of(other))


def test_generator_needs_matching_goods(toy, part, painters):
    base = {t: toy.defects[t].select(n) for t, n in base_of(part).items()}
    gen = build_inpaint_generator(painters, toy.train_good, base)
    assert gen.resolution == 32 and gen.channels == 3
    with pytest.raises(InputError, match="channel"):
        build_inpaint_generator(painters, toy.train_good.images[:, :1], base)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sampler_on_cuda(toy, part, painters):
    gen = create_generator("inpaint", toy, base_of(part), "cuda", checkpoints=painters)
    batch = gen.sample(3, "hole", rng(device="cuda"))
    assert batch.images.is_cuda and batch.masks.is_cuda and batch.labels.is_cuda and batch.goods.is_cuda


def test_dfmgan_mask_source(toy, part, painters, tmp_path):
    """--mask-source dfmgan: the painters paint into DFMGAN stage-2 masks; empty ones fall back to base masks."""
    from generators.dfmgan.api import fit_backbone, fit_defect
    from generators.dfmgan.api import load_config as dfmgan_config

    backbone = fit_backbone(toy.train_good.images[:8], dfmgan_config("dfmgan-tiny"), tmp_path, steps=0,
                            progress=False)
    subset = toy.defects["hole"].select(base_of(part)["hole"])
    dfm = {"hole": fit_defect(backbone, subset.images, subset.masks, "hole", tmp_path, steps=0, progress=False)}
    gen = create_generator("inpaint", toy, {"hole": base_of(part)["hole"]}, "cpu", checkpoints=painters,
                           mask_source="dfmgan", mask_checkpoints=dfm)
    batch = gen.sample(4, "hole", rng(1))
    assert batch.masks.shape == (4, 1, 32, 32) and (batch.masks.flatten(1).sum(1) > 0).all()
    assert gen.mask_source_name == "dfmgan"


def test_default_painter_config_is_the_smallest_that_covers_the_task():
    """A run that names no painter config gets the smallest one at least as large as the task's longer side, and
    every preset loads and passes the config checks."""
    from generators.inpaint.config import default_config_for

    assert [default_config_for(size) for size in [(32, 32), (64, 64), (64, 48), (192, 64), (256, 256)]] == [
        "inpaint-tiny", "inpaint-64", "inpaint-64", "inpaint-128", "inpaint-128"]
    for name in ("inpaint-tiny", "inpaint-64", "inpaint-128"):
        config = load_config(name)
        assert config["local_d"]["crop"] <= (config["train"]["crop"] or config["resolution"]) <= config["resolution"]
