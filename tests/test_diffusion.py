"""The diffusion painter and its sampler: outside mask + band a sample is the good image bit for bit, goods are
real train/good images, draws are fresh, seeded, balanced over types and on the device; the DDPM loss falls on a
fixed batch; training logs, resumes exactly and stops on NaN with the last checkpoint intact; the cache hands
training the partition's base set only (no test image) and refuses painters trained on another."""

from collections import Counter

import pytest
import torch

from generators.base import TrainingDiverged
from generators.diffusion.api import build_diffusion_generator, fit_diffusion, load_config
from generators.diffusion.checkpoint import load_painter_checkpoint
from generators.diffusion.networks import DEFECT, build_unet, training_scheduler
from generators.diffusion.sampler import windows
from generators.diffusion.train import diffusion_loss
from generators.inpaint.networks import feather
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
    config = load_config("diffusion-tiny")
    config["train"].update(train)
    return config


def fit(toy, defect, names, out, steps=2, **kw):
    subset = toy.defects[defect].select(names)
    return fit_diffusion(subset.images, subset.masks, toy.train_good.images, defect, out,
                         config=kw.pop("config", tiny()), steps=steps, progress=False, **kw)


@pytest.fixture(scope="module")
def painters(toy, part, tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion-painters")
    return {t: fit(toy, t, names, out / t, steps=3) for t, names in base_of(part).items()}


def rng(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def test_sampler_batches(toy, part, painters):
    gen = create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters)
    assert gen.defect_types == sorted(base_of(part)) and gen.steps == load_config("diffusion-tiny")["sample"]["steps"]
    r = rng(0)
    a, b = gen.sample(6, "scratch", r), gen.sample(6, "scratch", r)
    assert a.images.shape == a.goods.shape == (6, 3, 32, 32) and a.masks.shape == (6, 1, 32, 32)
    assert a.images.dtype == torch.float32 and 0 <= a.images.min() and a.images.max() <= 1
    assert set(a.masks.unique().tolist()) <= {0.0, 1.0} and (a.masks.flatten(1).sum(1) > 0).all()
    assert a.labels.tolist() == [gen.defect_types.index("scratch")] * 6
    assert not torch.equal(a.images, b.images) and not torch.equal(a.masks, b.masks), "fresh every draw"
    again = create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters).sample(6, "scratch", rng(0))
    assert torch.equal(a.images, again.images) and torch.equal(a.masks, again.masks), "seeded"
    outside = (feather(a.masks, 1) == 0).expand_as(a.images)
    assert torch.equal(a.images[outside], a.goods[outside]), "bit for bit outside mask + band"
    assert not torch.equal(a.images[~outside], a.goods[~outside]), "something is painted inside"
    real_goods = toy.train_good.images.float() / 255
    for good in a.goods:
        assert (real_goods == good).flatten(1).all(1).any(), "each paired good is one train/good image"
    assert a.images.device.type == a.masks.device.type == a.labels.device.type == "cpu"
    assert gen.source_names == base_of(part), "only base-set masks feed it"
    fewer = create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters, sample_steps=1)
    assert fewer.steps == 1 and not torch.equal(fewer.sample(6, "scratch", rng(0)).images, again.images)


def test_windows_hold_the_whole_blend_region_and_paint_the_same_way(toy, part, painters):
    """Painting on windows around the masks: each window holds all of its mask + band, a mask too large for the
    window gets a doubled one, and outside mask + band the image is still the good image."""
    masks = torch.zeros(3, 1, 32, 32)
    masks[0, :, 2:5, 3:6] = 1
    masks[1, :, 10:12, 1:30] = 1  # wider than an 8-pixel window
    masks[2, :, 28:32, 28:32] = 1  # on the corner
    alpha = feather(masks, 1)
    height, width, top, left = windows(alpha, 8)
    assert height.tolist() == [8, 8, 8] and width.tolist() == [8, 32, 8], "a long thin window for a long thin mask"
    for i in range(3):
        inside = torch.zeros_like(alpha[i, 0], dtype=torch.bool)
        inside[top[i]:top[i] + height[i], left[i]:left[i] + width[i]] = True
        assert (alpha[i, 0][~inside] == 0).all() and 0 <= top[i] <= 32 - height[i] and 0 <= left[i] <= 32 - width[i]
    gen = build_diffusion_generator(painters, toy.train_good, {t: toy.defects[t].select(n)
                                                               for t, n in base_of(part).items()})
    gen.window = 8
    goods = gen.goods[:3]
    painted = gen.paint(goods, masks, "hole", rng(3))
    outside = (alpha == 0).expand_as(goods)
    assert torch.equal(painted[outside], goods[outside]) and not torch.equal(painted, goods)


def test_the_loss_falls_on_a_fixed_batch(toy, part):
    """The DDPM objective, inside mask + band, on one fixed batch of base defects (fixed noise and timesteps)."""
    torch.manual_seed(0)
    config = tiny()
    subset = toy.defects["stain"].select(base_of(part)["stain"])
    x0, masks = subset.images.float() / 127.5 - 1, subset.masks.float()
    unet, scheduler = build_unet(config, 3).train(), training_scheduler(config)
    g = rng(1)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (x0.shape[0],), generator=g)
    labels = torch.full((x0.shape[0],), DEFECT)
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = diffusion_loss(unet, scheduler, x0, masks, labels, 1, noise, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_training_logs_and_checkpoints(toy, part, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = fit(toy, "hole", base_of(part)["hole"], tmp_path, steps=4, config=tiny(log_every=1, grid_every=2))
    state = load_painter_checkpoint(path)
    assert state["step"] == 4 and state["defect_type"] == "hole" and state["kind"] == "diffusion-painter"
    assert all(torch.isfinite(v).all() for v in state["unet_ema"].values())
    assert not all(torch.equal(state["unet"][k], v) for k, v in state["unet_ema"].items()), "EMA differs"
    events = EventAccumulator(str(next((tmp_path / "tb").iterdir()))).Reload()
    assert "diffusion/loss" in events.Tags()["scalars"]
    assert events.Tags()["images"] == ["diffusion/good|mask|painted|real"]


def test_resume_continues_exactly(toy, part, tmp_path):
    names = base_of(part)["stain"]
    config = tiny(save_every=1000, grid_every=1000)
    extra = {"base": names}
    whole = load_painter_checkpoint(fit(toy, "stain", names, tmp_path / "a", steps=4, config=config, extra=extra))
    fit(toy, "stain", names, tmp_path / "b", steps=2, config=config, extra=extra)
    resumed = load_painter_checkpoint(fit(toy, "stain", names, tmp_path / "b", steps=4, config=config, resume=True,
                                          extra=extra))
    assert resumed["step"] == whole["step"] == 4
    for name in ("unet", "unet_ema"):
        for key, value in whole[name].items():
            assert torch.equal(value, resumed[name][key]), (name, key)
    assert whole["ema"]["optimization_step"] == resumed["ema"]["optimization_step"] == 4
    assert str(whole["opt"]["state"]) == str(resumed["opt"]["state"])
    from inspect_train.errors import ResumeRefused

    with pytest.raises(ResumeRefused, match="another base"):
        fit(toy, "stain", names, tmp_path / "b", steps=5, config=config, resume=True, extra={"base": names[:1]})


def test_nan_stops_with_the_last_checkpoint_intact(toy, part, tmp_path, monkeypatch):
    import generators.diffusion.train as train

    names = base_of(part)["stain"]
    path = fit(toy, "stain", names, tmp_path, steps=2)
    before = path.read_bytes()
    monkeypatch.setattr(train, "region_mse", lambda *a: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        fit(toy, "stain", names, tmp_path, steps=4, resume=True, config=tiny(log_every=1))
    assert path.read_bytes() == before


def test_balance_over_types_in_the_online_batches(toy, part, painters):
    classes = sorted(base_of(part))
    gen = create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters)
    it = OnlineBatches(RealPool(toy, base_of(part), classes, "cpu"), gen, batch_size=10, synthetic_ratio=0.5, seed=0)
    syn = Counter()
    for _ in range(6):
        batch = next(it)
        syn.update(batch.labels[batch.synthetic].tolist())
    assert set(syn) == {0, 1, 2} and max(syn.values()) - min(syn.values()) <= 1 and sum(syn.values()) == 30
    assert batch.synthetic_goods is not None and batch.synthetic_goods.shape == (5, 3, 32, 32)


def test_other_mask_sources_and_refusals(toy, part, painters, tmp_path):
    import numpy as np
    from PIL import Image

    arr = np.zeros((40, 40), dtype=np.uint8)
    arr[5:9, 3:30] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    gen = create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters, mask_source=str(tmp_path))
    assert gen.sample(3, "hole", rng()).masks.shape == (3, 1, 32, 32) and gen.mask_source_name == str(tmp_path)
    with pytest.raises(InputError, match="mask source"):
        create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters, mask_source="/nonexistent")
    with pytest.raises(InputError, match="dfmgan"):
        create_generator("diffusion", toy, base_of(part), "cpu", checkpoints=painters, mask_source="dfmgan")
    with pytest.raises(InputError, match="diffusion checkpoint"):
        create_generator("diffusion", toy, base_of(part), "cpu", checkpoints={"hole": painters["hole"]})
    with pytest.raises(InputError, match="not a diffusion painter"):
        from generators.inpaint.api import fit_inpaint
        from generators.inpaint.api import load_config as inpaint_config

        subset = toy.defects["hole"].select(base_of(part)["hole"])
        other = fit_inpaint(subset.images, subset.masks, toy.train_good.images, "hole", tmp_path / "gan",
                            config=inpaint_config("inpaint-tiny"), steps=0, progress=False)
        build_diffusion_generator({"hole": other}, toy.train_good)
    with pytest.raises(InputError, match="channel"):
        build_diffusion_generator(painters, toy.train_good.images[:, :1],
                                  {t: toy.defects[t].select(n) for t, n in base_of(part).items()})


def test_cache_trains_on_the_base_set_only_and_refuses_another(toy, tmp_path, monkeypatch):
    import generators.diffusion.api as api
    from inspect_train.tasks.generators import open_cache

    handed = {}
    real_fit = api.fit_diffusion

    def spy(images, masks, goods, defect, out, **kw):
        handed[defect] = (images.clone(), goods.clone(), kw["extra"])
        return real_fit(images, masks, goods, defect, out, **kw)

    monkeypatch.setattr(api, "fit_diffusion", spy)
    manifest = make_manifest(toy.index, partitions=3, seed=0)
    part = get_partition(manifest, 2)
    base = base_of(part)
    cache = open_cache("diffusion", toy, {"train_steps": 1}, tmp_path, seed=0, device="cpu", manifest_path="m.json",
                       progress=False, say=lambda m: None)
    assert cache.config["name"] == "diffusion-tiny"
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
    handed.clear()
    again = open_cache("diffusion", toy, {"train_steps": 1}, tmp_path, seed=0, device="cpu", manifest_path="m.json",
                       progress=False, say=lambda m: None)
    assert again.checkpoints(2, base) == checkpoints and not handed, "reused, not retrained"
    other = get_partition(make_manifest(toy.index, partitions=3, seed=7), 2)
    with pytest.raises(InputError, match="another base set"):
        again.checkpoints(2, base_of(other))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sampler_on_cuda(toy, part, painters):
    gen = create_generator("diffusion", toy, base_of(part), "cuda", checkpoints=painters)
    batch = gen.sample(3, "hole", rng(device="cuda"))
    assert batch.images.is_cuda and batch.masks.is_cuda and batch.labels.is_cuda and batch.goods.is_cuda
