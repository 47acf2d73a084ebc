"""The online mixing dataset: freshness, mix ratio, class balance, device, seeds, and the protocol."""

from collections import Counter

import pytest
import torch

from generators.registry import create_generator
from inspect_train.data.category import load_category
from inspect_train.data.mvtec import scan_category
from inspect_train.errors import InputError
from inspect_train.online import GOOD, OnlineBatches, RealPool
from inspect_train.protocol import get_partition, make_manifest


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def part(toy):
    return get_partition(make_manifest(toy.index, partitions=2, seed=0), 2)


def base_of(part):
    return {t: split["base"] for t, split in part["defects"].items()}


def batches(toy, part, aug="crop-paste", with_good=False, ratio=0.5, batch_size=12, seed=0, device="cpu", **kw):
    classes = sorted(part["defects"]) + ([GOOD] if with_good else [])
    pool = RealPool(toy, base_of(part), classes, device)
    gen = create_generator(aug, toy, base_of(part), device) if aug else None
    return OnlineBatches(pool, gen, batch_size=batch_size, synthetic_ratio=ratio, seed=seed, device=device, **kw)


def test_fresh_synthetic_every_step(toy, part):
    it = batches(toy, part)
    a, b = next(it), next(it)
    assert a.synthetic.sum() == 6 and b.synthetic.sum() == 6
    assert not torch.equal(a.images[a.synthetic], b.images[b.synthetic])
    assert not torch.equal(a.masks[a.synthetic], b.masks[b.synthetic])


@pytest.mark.parametrize("ratio,batch_size,expected", [(0.5, 12, 6), (0.25, 10, 2), (0.0, 8, 0), (1.0, 8, 8), (0.3, 5, 2)])
def test_mix_ratio(toy, part, ratio, batch_size, expected):
    it = batches(toy, part, ratio=ratio, batch_size=batch_size)
    batch = next(it)
    assert len(batch.images) == batch_size == len(batch.labels) == len(batch.masks)
    assert int(batch.synthetic.sum()) == expected
    assert len(batch.real_names) == batch_size - expected
    assert it.synthetic_seen == expected and it.real_seen == batch_size - expected


def test_class_balance(toy, part):
    it = batches(toy, part, batch_size=10, ratio=0.5)  # 5 synthetic over 3 types: remainder rotates
    syn, real = Counter(), Counter()
    for _ in range(30):
        batch = next(it)
        syn.update(batch.labels[batch.synthetic].tolist())
        real.update(batch.labels[~batch.synthetic].tolist())
    assert set(syn) == set(real) == {0, 1, 2}
    assert max(syn.values()) - min(syn.values()) <= 1 and sum(syn.values()) == 150
    assert max(real.values()) - min(real.values()) <= 1 and sum(real.values()) == 150


def test_with_good_adds_good_class(toy, part):
    it = batches(toy, part, with_good=True, batch_size=8)
    labels = torch.cat([next(it).labels for _ in range(4)])
    assert 3 in labels.tolist(), "good images are served with --with-good"
    good_rows = labels == 3
    assert (it.synthetic_per_class.keys() <= set(part["defects"])) and GOOD not in it.synthetic_per_class
    assert good_rows.sum() > 0


def test_reproducible_from_seed(toy, part):
    one, two, other = batches(toy, part, seed=5), batches(toy, part, seed=5), batches(toy, part, seed=6)
    for _ in range(3):
        a, b, c = next(one), next(two), next(other)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_classic_aug_changes_real_images_only_when_asked(toy, part):
    plain = next(batches(toy, part, aug=None, seed=1))
    augmented = next(batches(toy, part, aug=None, seed=1, augment_real=True))
    assert plain.real_names == augmented.real_names
    assert not torch.equal(plain.images, augmented.images)
    assert not plain.synthetic.any()


def test_no_test_image_reaches_training(toy_root, toy):
    """Every real image served, and every image a generator holds, is in the partition's base set."""
    manifest = make_manifest(scan_category(toy_root, "toy"), partitions=3, seed=0)
    for k in (1, 2, 3):
        part = get_partition(manifest, k)
        for aug in ("crop-paste", "cut-paste") if k == 1 else ("crop-paste",):
            it = batches(toy, part, aug=aug, with_good=True, batch_size=16)
            for _ in range(20):
                next(it)
            served = set(it.served_real)
            for defect, split in part["defects"].items():
                names = {n for c, n in served if c == defect}
                assert names == set(split["base"]), "all base images used, and nothing else"
                assert not names & set(split["test"])
                assert set(it.generator.source_names[defect]) == set(split["base"])
            goods = {n for c, n in served if c == GOOD}
            assert goods and goods <= {f"train/good/{n}" for n in toy.train_good.names}


def test_bad_settings(toy, part):
    with pytest.raises(InputError, match="synthetic-ratio"):
        batches(toy, part, ratio=1.5)
    with pytest.raises(InputError, match="batch size"):
        batches(toy, part, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batches_on_cuda(toy, part):
    batch = next(batches(toy, part, device="cuda"))
    assert batch.images.is_cuda and batch.labels.is_cuda and batch.masks.is_cuda


def test_batches_on_cpu(toy, part):
    batch = next(batches(toy, part, device="cpu"))
    assert batch.images.device.type == "cpu" and batch.images.dtype == torch.float32
    assert 0 <= batch.images.min() and batch.images.max() <= 1
