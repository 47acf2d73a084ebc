"""KID and clustered-LPIPS arithmetic against plain brute-force loops; weight loading from files and caches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchvision import models as tv_models

from inspect_train.errors import InputError
from inspect_train.genmetrics.clustered_lpips import clustered_lpips
from inspect_train.genmetrics.inception import build_inception
from inspect_train.genmetrics.kid import kid_from_features
from inspect_train.genmetrics.lpips_net import build_lpips
from inspect_train.genmetrics.clustered_lpips import squared_distances
from inspect_train.genmetrics.lpips_net import packaged_lin_weights
from inspect_train.genmetrics.sources import generated_image_paths
from inspect_train.genmetrics.weights import hub_checkpoint_dir


# ---------------------------------------------------------------- KID


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as the definition reads."""
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_whole_sets_equals_brute_force_mmd():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(6, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(6, 8, generator=g, dtype=torch.float64) * 1.5 + 0.7
    result = kid_from_features(real, fake, subsets=5, seed=3)
    expected = brute_force_mmd2(real.numpy(), fake.numpy())
    # every subset holds all 6 of each side, and the unbiased MMD does not depend on the order
    assert result.subset_size == 6
    assert result.mean == pytest.approx(expected, rel=1e-4)
    assert result.std == pytest.approx(0.0, abs=1e-5 * abs(expected))
    assert result.as_dict()["x1e3_mean"] == pytest.approx(expected * 1e3, rel=1e-4)


def test_kid_subsets_equal_brute_force_over_the_same_draws():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(7, 5, generator=g, dtype=torch.float64)
    fake = torch.randn(9, 5, generator=g, dtype=torch.float64) + 0.5
    result = kid_from_features(real, fake, subsets=6, max_subset_size=4, seed=11)
    rng = np.random.RandomState(11)  # the documented draw order: real subset, then generated subset
    values = []
    for _ in range(6):
        r = real.numpy()[rng.choice(7, 4, replace=False)]
        f = fake.numpy()[rng.choice(9, 4, replace=False)]
        values.append(brute_force_mmd2(r, f))
    assert result.subset_size == 4 and result.n_real == 7 and result.n_generated == 9
    assert result.mean == pytest.approx(np.mean(values), rel=1e-4)
    assert result.std == pytest.approx(np.std(values), rel=1e-3)
    assert result.std > 0


def test_kid_is_near_zero_for_one_distribution_and_large_for_two():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
    same = kid_from_features(a, b, subsets=20, max_subset_size=100).mean
    shifted = kid_from_features(a, b + 1.0, subsets=20, max_subset_size=100).mean
    assert abs(same) < 0.05 * shifted


def test_kid_needs_two_samples_each():
    with pytest.raises(InputError, match="at least 2 real"):
        kid_from_features(torch.randn(1, 4), torch.randn(5, 4))


# ---------------------------------------------------------------- LPIPS


@pytest.mark.parametrize("net", ["alex", "squeeze"])  # vgg builds a 138M-parameter net: too slow here
def test_lpips_embedding_distances_equal_the_library_forward(net):
    embed = build_lpips(net, random_init=True, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 40, 36), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 256, (2, 1, 40, 36), generator=g, dtype=torch.uint8)  # grey is repeated to RGB
    got = squared_distances(embed(x), embed(y))
    with torch.no_grad():
        ref = torch.tensor([[float(embed.model(embed.to_input(x[i:i + 1]), embed.to_input(y[j:j + 1])))
                             for j in range(2)] for i in range(3)])
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)
    assert (ref > 0).all()


def brute_force_clustered(gen: list, real: list, dist, cap: int | None):
    """Nearest real image by `dist` (first on ties), mean over pairs inside each cluster, 0 for < 2 members."""
    clusters = [[] for _ in real]
    for g in gen:
        scores = [dist(g, r) for r in real]
        clusters[scores.index(min(scores))].append(g)
    means = []
    for members in clusters:
        members = members[:cap] if cap else members
        pairs = list(itertools.combinations(members, 2))
        means.append(sum(dist(a, b) for a, b in pairs) / len(pairs) if pairs else None)
    filled = [m for m in means if m is not None]
    return sum(filled) / len(means), sum(filled) / len(filled), [len(c) for c in clusters], means


@pytest.mark.parametrize("cap", [None, 3])
def test_clustered_lpips_arithmetic_equals_brute_force(cap):
    g = torch.Generator().manual_seed(4)
    real = torch.randint(0, 256, (4, 1, 3, 3), generator=g, dtype=torch.uint8)
    # 18 samples around reals 0-2, one around real 3 (a singleton), none elsewhere
    around = [0, 1, 2] * 6 + [3]
    noise = torch.randint(-20, 21, (len(around), 1, 3, 3), generator=g)
    gen = (real[around].long() + noise).clamp(0, 255).to(torch.uint8)
    embed = lambda images: images.float().flatten(1) / 255  # noqa: E731  squared distance plays LPIPS
    dist = lambda a, b: float(((a.double() - b.double()) / 255).pow(2).sum())  # noqa: E731
    result = clustered_lpips(gen, real, embed, batch=5, max_per_cluster=cap, progress=False)
    value, nonempty, sizes, means = brute_force_clustered(list(gen), list(real), dist, cap)
    assert result.cluster_sizes == sizes
    assert sorted(sizes) == [1, 6, 6, 6]
    assert [m is None for m in result.cluster_means] == [m is None for m in means]
    assert result.value == pytest.approx(value, rel=1e-5)
    assert result.value_nonempty == pytest.approx(nonempty, rel=1e-5)
    assert result.value < result.value_nonempty  # the singleton counts 0 in the headline number


def test_clustered_lpips_with_the_lpips_network_equals_pairwise_library_calls():
    embed = build_lpips("alex", random_init=True, seed=1)
    g = torch.Generator().manual_seed(5)
    real = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    gen = (real[[0, 1, 0, 2, 0, 1, 2, 0]].long() + torch.randint(-30, 31, (8, 3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)

    def dist(a, b):
        with torch.no_grad():
            return float(embed.model(embed.to_input(a[None]), embed.to_input(b[None])))

    result = clustered_lpips(gen, real, embed, batch=3, progress=False)
    value, nonempty, sizes, _ = brute_force_clustered(list(gen), list(real), dist, None)
    assert result.cluster_sizes == sizes
    assert result.value == pytest.approx(value, rel=1e-4)
    assert result.value_nonempty == pytest.approx(nonempty, rel=1e-4)


def test_identical_copies_score_zero_clustered_lpips():
    embed = build_lpips("alex", random_init=True)
    real = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    copies = real[[0, 0, 0, 1, 1]]
    assert clustered_lpips(copies, real, embed, progress=False).value == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- weights: cache, explicit paths, errors


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def test_missing_weights_name_the_file_and_where_we_looked(empty_torch_home):
    with pytest.raises(InputError) as err:
        build_inception()
    text = str(err.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in text and str(empty_torch_home) in text
    assert "--inception-weights" in text and "\n" not in text
    with pytest.raises(InputError, match="alexnet-owt-7be5be79.pth.*--lpips-backbone-weights"):
        build_lpips("alex")
    with pytest.raises(InputError, match="nope.pth: Inception-v3 .KID. weights file not found"):
        build_inception("/nope.pth")


def test_weights_load_from_the_hub_cache(empty_torch_home):
    """Files in the real formats (random values) are found in the cache and loaded, not left at init."""
    cache = hub_checkpoint_dir()
    cache.mkdir(parents=True)
    random_inception = build_inception(random_init=True, seed=7)
    torch.save(random_inception.model.state_dict(), cache / "weights-inception-2015-12-05-6726825d.pth")
    torch.manual_seed(8)
    alexnet = tv_models.alexnet(weights=None)  # only its conv layers are read; the classifier would cost 240 MB
    torch.save({k: v for k, v in alexnet.state_dict().items() if k.startswith("features.")}, cache / "alexnet-owt-7be5be79.pth")

    loaded = build_inception()
    assert loaded.weights.endswith("weights-inception-2015-12-05-6726825d.pth")
    expected = random_inception.model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.model.state_dict().items())

    embed = build_lpips("alex")
    assert embed.weights["backbone"].endswith("alexnet-owt-7be5be79.pth")
    assert torch.equal(getattr(embed.model.net.slice2, "3").weight, alexnet.features[3].weight)
    lin = torch.load(packaged_lin_weights("alex"), map_location="cpu")
    assert torch.equal(embed.model.lin4.model[1].weight, lin["lin4.model.1.weight"])


def test_bad_lin_weights_are_refused(tmp_path, empty_torch_home):
    cache = hub_checkpoint_dir()
    cache.mkdir(parents=True)
    features = {k: v for k, v in tv_models.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(features, cache / "alexnet-owt-7be5be79.pth")
    bad = {k: -v for k, v in torch.load(packaged_lin_weights("alex"), map_location="cpu").items()}
    torch.save(bad, tmp_path / "neg.pth")
    with pytest.raises(InputError, match="non-negative"):
        build_lpips("alex", lin_weights=tmp_path / "neg.pth")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="not LPIPS v0.1 alex linear weights"):
        build_lpips("alex", lin_weights=tmp_path / "other.pth")


# ---------------------------------------------------------------- picking generated images


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)


def test_generated_images_by_index_glob_or_names(tmp_path):
    plain = tmp_path / "plain"
    for name in ("a.png", "a_mask.png", "a_good.png", "masks/b.png", "b.png"):
        _png(plain / name)
    paths, how = generated_image_paths(plain, "crack")
    assert [p.name for p in paths] == ["a.png", "b.png"] and "except masks" in how
    paths, _ = generated_image_paths(plain, "crack", glob="*_good.png")
    assert [p.name for p in paths] == ["a_good.png"]

    indexed = tmp_path / "indexed"
    for name in ("images/0.png", "images/1.png", "masks/0.png"):
        _png(indexed / name)
    (indexed / "index.csv").write_text("image,mask,defect_type\nimages/0.png,masks/0.png,crack\nimages/1.png,masks/0.png,hole\n")
    paths, how = generated_image_paths(indexed, "hole")
    assert [p.relative_to(indexed).as_posix() for p in paths] == ["images/1.png"] and how == "index index.csv"
    with pytest.raises(InputError, match="no sample of defect type 'cut'.*crack, hole"):
        generated_image_paths(indexed, "cut")


def test_generated_masks_come_from_the_index_or_beside_the_images(tmp_path):
    from inspect_train.genmetrics.sources import generated_pairs

    indexed = tmp_path / "indexed"
    for name in ("images/0.png", "masks/m0.png"):
        _png(indexed / name)
    (indexed / "index.csv").write_text("image,mask,defect_type\nimages/0.png,masks/m0.png,crack\n")
    images, masks, _ = generated_pairs(indexed, "crack")
    assert [m.relative_to(indexed).as_posix() for m in masks] == ["masks/m0.png"]

    plain = tmp_path / "plain"
    for name in ("images/a.png", "masks/a.png", "b.png", "b_mask.png"):
        _png(plain / name)
    images, masks, _ = generated_pairs(plain, "crack")  # masks and masks/ are not taken for images
    pairs = {i.relative_to(plain).as_posix(): m.relative_to(plain).as_posix() for i, m in zip(images, masks)}
    assert pairs == {"images/a.png": "masks/a.png", "b.png": "b_mask.png"}
    _png(plain / "c.png")
    with pytest.raises(InputError, match="c.png: no mask found"):
        generated_pairs(plain, "crack")


def test_kid_and_lpips_are_skipped_in_one_line_without_weights(empty_torch_home):
    from inspect_train.genmetrics.evaluate import metric_networks

    inception, embedder, note = metric_networks(
        inception_weights=None, lpips_backbone_weights=None, lpips_lin_weights=None, lpips_net="alex",
        random_features=False, size=(64, 64), seed=0, device="cpu", batch=8)
    assert inception is None and embedder is None and "\n" not in note
    assert "weights-inception-2015-12-05-6726825d.pth" in note and "alexnet-owt-7be5be79.pth" in note
    with pytest.raises(InputError, match="none.pth"):
        metric_networks(inception_weights="/none.pth", lpips_backbone_weights=None, lpips_lin_weights=None,
                        lpips_net="alex", random_features=False, size=(64, 64), seed=0, device="cpu", batch=8)


def test_weight_file_names_match_the_libraries():
    """evaluate-gen looks for these names without importing torch-fidelity or building the LPIPS nets."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from inspect_train.genmetrics.lpips_net import BACKBONES
    from inspect_train.genmetrics.weights import INCEPTION_URL, LPIPS_BACKBONE_URLS

    assert INCEPTION_URL == URL_INCEPTION_V3
    assert LPIPS_BACKBONE_URLS == {name: weights.url for name, weights in BACKBONES.items()}
