"""Steering: the model being trained tells the online dataset which defect types, generators and samples to draw."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from generators.mixture import MixtureGenerator
from generators.registry import REAL_ONLY, create_generator
from inspect_train.arms import arm_names, check_mixture, parse_arm
from inspect_train.cli import main
from inspect_train.data.category import load_category
from inspect_train.errors import InputError
from inspect_train.online import OnlineBatches, RealPool
from inspect_train.protocol import get_partition, make_manifest
from inspect_train.report import read_results
from inspect_train.steering import SteerSettings, Steering, mixed_shares


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def part(toy):
    return get_partition(make_manifest(toy.index, partitions=2, seed=0), 1)


def base_of(part):
    return {t: split["base"] for t, split in part["defects"].items()}


def online(toy, part, steering=None, scorer=None, aug="crop-paste", batch_size=12):
    classes = sorted(part["defects"])
    pool = RealPool(toy, base_of(part), classes, "cpu")
    generator = create_generator(aug, toy, base_of(part), "cpu")
    return OnlineBatches(pool, generator, batch_size=batch_size, synthetic_ratio=0.5, seed=0, source=aug,
                         steering=steering, scorer=scorer)


def failing_type_losses(batches, batch, hard: str) -> torch.Tensor:
    """A fixed model that fails one type: loss 3 on its rows, 0.1 on every other row."""
    names = batches.pool.class_names
    return torch.tensor([3.0 if names[i] == hard else 0.1 for i in batch.labels.tolist()])


def test_type_shares_move_to_the_type_the_model_fails_and_the_floor_holds(toy, part):
    types = sorted(part["defects"])
    hard = types[1]
    settings = SteerSettings("types", temperature=0.5, floor=0.3)
    steering = Steering(settings, types, ["crop-paste"])
    batches = online(toy, part, steering)
    drawn = Counter()
    for _ in range(40):
        batch = next(batches)
        batches.observe(batch, failing_type_losses(batches, batch, hard))
        drawn.update(batches.pool.class_names[i] for i in batch.labels[batch.synthetic].tolist())
    total = sum(drawn.values())
    assert total == 40 * 6
    floor = settings.floor / len(types)
    assert drawn[hard] / total > 0.6, drawn
    for other in types:
        if other != hard:
            assert drawn[other] / total >= floor - 0.02, (other, drawn)  # no type starves
            assert drawn[other] / total < 1 / len(types), drawn
    shares = steering.type_shares()
    assert min(shares) >= floor - 1e-9 and abs(sum(shares) - 1) < 1e-9
    assert steering.record()["drawn_share"][hard] == round(drawn[hard] / total, 4)


def test_shares_are_even_until_a_loss_is_seen_and_steer_off_keeps_the_even_split(toy, part):
    assert mixed_shares([None, None, None], 0.5, 0.3) == [1 / 3] * 3
    assert mixed_shares([2.0, None], 1.0, 0.0)[0] == pytest.approx(0.5)  # an unseen key counts as the mean loss
    types = sorted(part["defects"])
    plain, off = online(toy, part), online(toy, part, Steering(SteerSettings("off"), types, ["crop-paste"]))
    for _ in range(3):
        a, b = next(plain), next(off)
        off.observe(b, failing_type_losses(off, b, types[0]))
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_hard_keeps_the_hardest_candidate_and_one_candidate_is_the_plain_draw(toy, part):
    types = sorted(part["defects"])
    seen = []

    def brightness(images, masks, labels):  # a "model" that finds bright samples hard
        seen.append(images.shape[0])
        return images.mean(dim=(1, 2, 3))

    hard = online(toy, part, Steering(SteerSettings("hard", candidates=4), types, ["crop-paste"]), brightness)
    plain = online(toy, part)
    a, b = next(hard), next(plain)
    assert seen == [4 * 2] * len(types), "each type's 2 samples picked from 4 candidates each"
    assert a.images[a.synthetic].mean() > b.images[b.synthetic].mean()
    one = online(toy, part, Steering(SteerSettings("hard", candidates=1), types, ["crop-paste"]), brightness)
    plain = online(toy, part)
    for _ in range(3):
        a, b = next(one), next(plain)
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)


def test_a_mixture_draws_each_sample_from_one_of_its_generators_in_equal_shares(toy, part):
    types = sorted(part["defects"])
    steering = Steering(SteerSettings("off"), types, ["crop-paste", "perlin"])
    parts = {name: create_generator(name, toy, base_of(part), "cpu") for name in ("crop-paste", "perlin")}
    mixture = MixtureGenerator(parts, steering.source_counts)
    pool = RealPool(toy, base_of(part), types, "cpu")
    batches = OnlineBatches(pool, mixture, batch_size=12, synthetic_ratio=0.5, seed=0, source="mix",
                            steering=steering)
    sources = Counter()
    for _ in range(10):
        batch = next(batches)
        syn = batch.synthetic.tolist()
        assert all((s is None) != flag for s, flag in zip(batch.sources, syn))
        sources.update(s for s in batch.sources if s is not None)
    assert sources == Counter({"crop-paste": 30, "perlin": 30})
    assert steering.record()["drawn_share_by_generator"] == {"crop-paste": 0.5, "perlin": 0.5}


def test_a_steered_mixture_favours_the_generator_whose_samples_the_model_gets_wrong(toy, part):
    types = sorted(part["defects"])
    steering = Steering(SteerSettings("types", temperature=0.5, floor=0.2), types, ["crop-paste", "perlin"])
    parts = {name: create_generator(name, toy, base_of(part), "cpu") for name in ("crop-paste", "perlin")}
    pool = RealPool(toy, base_of(part), types, "cpu")
    batches = OnlineBatches(pool, MixtureGenerator(parts, steering.source_counts), batch_size=12,
                            synthetic_ratio=0.5, seed=0, source="mix", steering=steering)
    for _ in range(30):
        batch = next(batches)
        batches.observe(batch, torch.tensor([3.0 if s == "perlin" else 0.1 for s in batch.sources]))
    shares = steering.record()["drawn_share_by_generator"]
    assert shares["perlin"] > 0.65 and shares["crop-paste"] >= 0.1, shares


def test_steered_arms_and_mixtures_name_the_arms_they_are_paired_against():
    from inspect_train.arms import references

    arms = ["none", "a", "a+types", "b", "a+b", "a+b+types", "b+types"]
    assert references("a+types", arms, REAL_ONLY) == ["a"]
    assert references("a+b", arms, REAL_ONLY) == ["a", "b"]
    assert references("a+b+types", arms, REAL_ONLY) == ["a+b", "a+types", "b+types"]
    assert references("a+b+hard", arms, REAL_ONLY) == ["a+b"]  # no a+hard or b+hard in the run
    assert references("a", arms, REAL_ONLY) == [] and references("none", arms, REAL_ONLY) == []


def test_arm_names_spell_generators_mixtures_and_modes():
    assert arm_names(["crop-paste", "classic"], ["off", "types", "hard"], REAL_ONLY) == [
        "crop-paste", "crop-paste+types", "crop-paste+hard", "classic"]
    assert parse_arm("crop-paste+inpaint+hard", REAL_ONLY).generators == ("crop-paste", "inpaint")
    assert parse_arm("crop-paste+inpaint+hard", REAL_ONLY).steer == "hard"
    assert parse_arm("none", REAL_ONLY).generators == ()
    names = ["crop-paste", "inpaint", "perlin"]
    for bad, words in (("crop-paste+nope", "'nope' is not a generator"), ("crop-paste+classic", "cannot be mixed"),
                       ("perlin+perlin", "appears twice"), ("perlin+types", "--steer types")):
        with pytest.raises(InputError, match=words):
            check_mixture(bad, names, REAL_ONLY)


def run(toy_root, tiny_config, out, *argv):
    return main(["classify", "--data", str(toy_root), "--category", "toy", "--config", tiny_config,
                 "--partitions", "1", "--quiet", "--out", str(out), *argv])


def test_one_candidate_reproduces_the_unsteered_arm_exactly_and_the_run_records_the_steering(
        toy_root, tiny_config, tmp_path, monkeypatch):
    from inspect_train.tasks import classify as classify_task

    scored = []
    real_seen = set()
    original_observe = OnlineBatches.observe

    def watch_observe(self, batch, losses):
        real_seen.update(batch.real_names)
        return original_observe(self, batch, losses)

    original_losses = classify_task.ClassifyTask.sample_losses

    def watch_losses(self, model, images, masks, labels, settings):
        scored.append(images.shape[0])
        return original_losses(self, model, images, masks, labels, settings)

    monkeypatch.setattr(OnlineBatches, "observe", watch_observe)
    monkeypatch.setattr(classify_task.ClassifyTask, "sample_losses", watch_losses)
    assert run(toy_root, tiny_config, tmp_path, "--aug", "crop-paste", "crop-paste+perlin",
               "--steer", "off", "types", "hard", "--steer-candidates", "1") == 0
    entry = read_results(tmp_path)["partitions"][0]
    assert entry["arms"]["crop-paste+hard"] == entry["arms"]["crop-paste"]
    assert entry["tests"]["crop-paste+hard"] == entry["tests"]["crop-paste"]
    assert scored, "the hard arm scored its candidates"
    assert entry["runs"]["crop-paste+types"]["steering"]["mode"] == "types"
    assert set(entry["runs"]["crop-paste+perlin"]["steering"]["drawn_share_by_generator"]) == {"crop-paste",
                                                                                               "perlin"}
    # Only training rows reach the steering: every real image it saw is from the partition's base set.
    manifest = read_results(tmp_path)["manifest"]
    base = {(t, n) for t, split in get_partition(__import__("json").load(open(manifest)), 1)["defects"].items()
            for n in split["base"]}
    assert real_seen and real_seen <= base
    assert "steering types: synthetic samples per type" in (tmp_path / "report.md").read_text()
    # Each steered arm is also paired against its plain arm, each mixture against its parts in the run.
    pairs = entry["pairs"]
    assert set(pairs["crop-paste+perlin+types"]) == {"crop-paste+perlin", "crop-paste+types"}
    assert set(pairs["crop-paste+perlin"]) == {"crop-paste"} and "crop-paste" not in pairs
    same = pairs["crop-paste+hard"]["crop-paste"]["accuracy"]
    assert same["arm_only"] == same["baseline_only"] == 0 and same["p_value"] == 1.0
    assert "| P1 | crop-paste+perlin+types | crop-paste+types |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("task", ["segment", "detect"])
def test_segment_and_detect_steer_with_their_own_losses_and_one_candidate_is_the_plain_arm(
        task, toy_root, fast_presets, tmp_path, monkeypatch):
    """types reads each training row's loss (segment: pixel loss in the mask; detect: the image's detector loss),
    hard scores candidates with the same loss, and one candidate trains exactly the plain arm."""
    module = __import__(f"inspect_train.tasks.{task}", fromlist=["TASK"])
    scored = []
    original = type(module.TASK).sample_losses

    def watch(self, model, images, masks, labels, settings):
        losses = original(self, model, images, masks, labels, settings)
        scored.append(losses)
        return losses

    monkeypatch.setattr(type(module.TASK), "sample_losses", watch)
    common = [task, "--data", str(toy_root), "--category", "toy", "--config", fast_presets[task], "--aug",
              "crop-paste", "--no-baseline", "--steps", "3", "--partitions", "1", "--quiet"]
    assert main([*common, "--steer", "types", "hard", "--steer-candidates", "2", "--out", str(tmp_path / "k2")]) == 0
    runs = read_results(tmp_path / "k2")["partitions"][0]["runs"]
    losses = runs["crop-paste+types"]["steering"]["running_loss"]
    assert losses and all(math.isfinite(v) and v > 0 for v in losses.values())
    assert runs["crop-paste+hard"]["steering"]["candidates"] == 2
    assert scored and all(s.ndim == 1 and torch.isfinite(s).all() for s in scored)

    assert main([*common, "--steer", "off", "hard", "--steer-candidates", "1", "--out", str(tmp_path / "k1")]) == 0
    entry = read_results(tmp_path / "k1")["partitions"][0]
    assert entry["arms"]["crop-paste+hard"] == entry["arms"]["crop-paste"]


def test_the_mask_loss_counts_the_pixels_inside_the_mask_and_the_whole_image_without_one():
    from inspect_train.models.segmenters import mask_losses

    masks = torch.zeros(3, 1, 8, 8)
    masks[:2, :, 2:5, 2:5] = 1.0
    logits = torch.full((3, 1, 8, 8), -6.0)
    logits[0, :, 2:5, 2:5] = 6.0  # row 0 finds its defect, row 1 misses it; row 2 has no defect to find
    losses = mask_losses(logits, masks)
    assert losses[0] < 0.01 < 5.0 < losses[1]
    assert losses[2] == pytest.approx(F.binary_cross_entropy_with_logits(logits[2], masks[2]).item())


def test_the_detectors_per_image_loss_moves_no_statistics_and_restores_every_mode(toy, fast_presets):
    from inspect_train.boxes import box_targets
    from inspect_train.models.registry import create_detector
    from inspect_train.tasks.detect import image_losses

    config = __import__("yaml").safe_load(open(fast_presets["detect"]))["models"]["fcos"]
    torch.manual_seed(0)
    net = create_detector("fcos", toy.channels, len(toy.defect_types), toy.size, config)
    net.train()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    norms[0].eval()  # a mixed state, to be given back as it was
    modes = [m.training for m in net.modules()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.rand(3, toy.channels, *toy.size)
    masks = torch.zeros(3, 1, *toy.size)
    masks[0, :, 4:12, 4:12] = 1.0
    losses = image_losses(net, images, box_targets(masks, torch.tensor([0, 0, 0])))
    assert losses.shape == (3,) and torch.isfinite(losses).all() and not losses.requires_grad
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_the_steering_settings_count_in_the_resume_stamp_of_steered_arms_only():
    from inspect_train.tasks.resume import arm_stamp

    def stamp(floor):
        return {"settings": {"steer_floor": floor, "steps": 3, "generators": {}}, "splits": {"1": {}}}

    for arm in ("none", "crop-paste", "crop-paste+perlin"):
        assert arm_stamp(stamp(0.3), arm, 1, None) == arm_stamp(stamp(0.5), arm, 1, None)
    for arm in ("crop-paste+types", "crop-paste+perlin+hard"):
        assert arm_stamp(stamp(0.3), arm, 1, None) != arm_stamp(stamp(0.5), arm, 1, None)


def test_a_mixture_arm_trains_a_segmenter(toy_root, fast_presets, tmp_path):
    assert main(["segment", "--data", str(toy_root), "--category", "toy", "--config", fast_presets["segment"],
                 "--aug", "crop-paste+perlin", "--no-baseline", "--steps", "2", "--partitions", "1", "--quiet",
                 "--out", str(tmp_path)]) == 0
    run = read_results(tmp_path)["partitions"][0]["runs"]["crop-paste+perlin"]
    assert sum(run["steering"]["drawn_share_by_generator"].values()) == pytest.approx(1.0)
    assert "pixel_ap" in read_results(tmp_path)["partitions"][0]["arms"]["crop-paste+perlin"]
