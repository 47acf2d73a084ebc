"""`inspect-train evaluate-gen` end to end on the toy data: classic generators, DFMGAN and the inpaint
painters from a generators folder, a folder of generated images, KID/LPIPS only when weights exist, the protocol (no test image is
read) and bad input -> one line, exit 2."""

from __future__ import annotations

import csv
import json
import shutil
import time

import pytest

from inspect_train.cli import main
from inspect_train.data.mvtec import scan_category
from inspect_train.protocol import make_manifest, write_json_atomic


@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    """An empty torch hub cache, so KID/LPIPS are skipped unless a test asks for them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "empty-torch-home"))


def run_cli(*args) -> int:
    return main(["evaluate-gen", *map(str, args)])


@pytest.fixture(scope="module")
def split(toy_root, tmp_path_factory):
    """The toy split made like `data split` (3 partitions, seed 0), written as a manifest file."""
    manifest = make_manifest(scan_category(toy_root, "toy"), partitions=3, seed=0)
    return manifest, write_json_atomic(manifest, tmp_path_factory.mktemp("manifest") / "manifest.json")


@pytest.fixture(scope="module")
def generators_dir(toy_root, split, tmp_path_factory):
    """A generators folder as classify/segment write it (index.json + checkpoints), for P1 'hole' only:
    the same cache code as a run's, 1 step per stage at dfmgan-tiny (32x32)."""
    from inspect_train.data.category import load_category
    from inspect_train.tasks.generators import open_cache

    manifest, path = split
    folder = tmp_path_factory.mktemp("gens") / "generators"
    data = load_category(toy_root, "toy", size=(32, 32))
    cache = open_cache("dfmgan", data, {"config": "dfmgan-tiny", "backbone_steps": 1, "defect_steps": 1}, folder,
                       seed=0, device="cpu", progress=False, manifest_path=str(path), say=lambda message: None)
    cache.checkpoints(1, {"hole": manifest["partitions"][0]["defects"]["hole"]["base"]})
    return folder


@pytest.fixture(scope="module")
def painters_dir(toy_root, split, tmp_path_factory):
    """A generators folder holding only inpaint painters, laid out as classify/segment write it
    (<generators>/inpaint/index.json + p1/<defect>/inpaint_<defect>.pt): the same cache code as a run's, 1 step
    per painter at inpaint-tiny (32x32), for every P1 defect type."""
    from inspect_train.data.category import load_category
    from inspect_train.tasks.generators import open_cache

    manifest, path = split
    folder = tmp_path_factory.mktemp("painters") / "generators"
    data = load_category(toy_root, "toy", size=(32, 32))
    cache = open_cache("inpaint", data, {"config": "inpaint-tiny", "steps": 1}, folder, seed=0, device="cpu",
                       progress=False, manifest_path=str(path), say=lambda message: None)
    cache.checkpoints(1, {d: v["base"] for d, v in manifest["partitions"][0]["defects"].items()})
    return folder


def test_classic_generators_write_tables_sheets_and_tensorboard(toy_root, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "eval"
    started = time.time()
    assert run_cli("--aug", "crop-paste", "perlin", "--data", toy_root, "--category", "toy", "--partition", 1,
                   "--n", 16, "--resolution", 32, "--out", out) == 0
    seconds = time.time() - started
    printed = capsys.readouterr().out
    assert "skipped KID" in printed and "clustered LPIPS" in printed  # no weights here: one note, not an error
    results = json.loads((out / "results.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())  # made like `data split` and kept
    assert results["kid_lpips"]["computed"] is False and "Inception" in results["kid_lpips"]["why"]
    assert results["resolution"] == [32, 32] and results["partition"] == 1
    assert list(results["defects"]) == ["hole", "scratch", "stain"]
    for defect, entry in results["defects"].items():
        assert entry["base_images"] == manifest["partitions"][0]["defects"][defect]["base"]
        assert [r["source"] for r in entry["rows"]] == ["real base set", "crop-paste", "perlin"]
        real, *generated = entry["rows"]
        assert real["n"] == 6 and real["mask_distance"]["value"] == 0
        for row in generated:
            assert row["n"] == 16 and 0 <= row["two_sample"]["accuracy"] <= 1 and row["two_sample"]["std"] >= 0
            assert row["mask_distance"]["value"] >= 0 and row["diversity"] > 0
            assert set(row["mask"]) >= {"area_median", "area_q10", "area_q90", "components_mean", "border_fraction",
                                        "elongation_median", "orientation_abs_median_deg", "centroid_spread"}
        assert (out / entry["sheet"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert report.count("| real base set |") == 3 and report.count("| perlin |") == 3
    assert "![hole](sheet_hole.png)" in report
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert "evaluate_gen/hole/contact_sheet" in events.Tags()["images"]
    assert "evaluate_gen/hole/perlin/real_vs_generated_accuracy" in events.Tags()["scalars"]
    print(f"toy evaluate-gen, crop-paste + perlin, 3 defect types, n 16: {seconds:.1f} s")
    assert seconds < 60


def _protocol_paths(toy_root, manifest: dict, defect: str) -> tuple[set[str], set[str]]:
    """The files evaluate-gen must never open (P1's test images of every defect type, test/good) and the P1
    base images of `defect` it must."""
    index = scan_category(toy_root, "toy")
    part = manifest["partitions"][0]["defects"]
    test_paths = {str(item.image) for d, items in index.defects.items() for item in items if item.name in part[d]["test"]}
    test_paths |= {str(p) for p in index.test_good}
    base_paths = {str(item.image) for item in index.defects[defect] if item.name in part[defect]["base"]}
    return test_paths, base_paths


def test_dfmgan_from_a_generators_folder_reads_no_test_image(toy_root, split, generators_dir, tmp_path, monkeypatch):
    import inspect_train.data.images as images

    manifest, manifest_path = split
    read = []
    original = images.read_image_array
    monkeypatch.setattr(images, "read_image_array", lambda path: read.append(str(path)) or original(path))
    out = tmp_path / "eval"
    assert run_cli("--aug", "crop-paste", "dfmgan", "--data", toy_root, "--category", "toy", "--partition", 1,
                   "--defect", "hole", "--generators", generators_dir, "--manifest", manifest_path, "--n", 8,
                   "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resolution"] == [32, 32]  # the DFMGAN generators' resolution
    rows = results["defects"]["hole"]["rows"]
    assert [r["source"] for r in rows] == ["real base set", "crop-paste", "dfmgan"] and rows[2]["n"] == 8
    dfmgan = next(s for s in results["sources"] if s["name"] == "dfmgan")
    assert dfmgan["checkpoints"]["hole"].endswith("defect_hole.pt")
    test_paths, base_paths = _protocol_paths(toy_root, manifest, "hole")
    assert read and base_paths <= set(read) and not test_paths & set(read)
    assert not any("/test/scratch/" in p or "/test/stain/" in p for p in read)  # types not scored: not read either


def test_inpaint_painters_from_a_generators_folder(toy_root, split, painters_dir, tmp_path, monkeypatch):
    import inspect_train.data.images as images

    manifest, manifest_path = split
    read = []
    original = images.read_image_array
    monkeypatch.setattr(images, "read_image_array", lambda path: read.append(str(path)) or original(path))
    out = tmp_path / "eval"
    assert run_cli("--aug", "crop-paste", "inpaint", "--generators", painters_dir, "--manifest", manifest_path,
                   "--data", toy_root, "--category", "toy", "--partition", 1, "--n", 16, "--resolution", 32,
                   "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resolution"] == [32, 32]
    inpaint = next(s for s in results["sources"] if s["name"] == "inpaint")
    assert inpaint["kind"] == "inpaint" and inpaint["from"] == str(painters_dir) and inpaint["resolution"] == 32
    report = (out / "report.md").read_text()
    for defect, entry in results["defects"].items():
        assert inpaint["checkpoints"][defect].endswith(f"inpaint/p1/{defect}/inpaint_{defect}.pt")
        assert entry["base_images"] == manifest["partitions"][0]["defects"][defect]["base"]
        rows = entry["rows"]
        assert [r["source"] for r in rows] == ["real base set", "crop-paste", "inpaint"]
        assert rows[2]["kind"] == "inpaint" and rows[2]["n"] == 16 and 0 <= rows[2]["two_sample"]["accuracy"] <= 1
        assert rows[2]["mask"]["empty_fraction"] == 0  # deformed base masks always mark a pixel
        assert (out / entry["sheet"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(results["defects"]) == ["hole", "scratch", "stain"] and report.count("| inpaint |") == 3
    test_paths, base_paths = _protocol_paths(toy_root, manifest, "stain")
    assert base_paths <= set(read) and not test_paths & set(read)  # painting reads train/good, never a test image

    # An explicit painter checkpoint goes to --aug inpaint; without --resolution, the painters' own size is used.
    painter = painters_dir / "inpaint" / "p1" / "hole" / "inpaint_hole.pt"
    out = tmp_path / "eval-checkpoint"
    assert run_cli("--aug", "inpaint", "--checkpoint", f"hole={painter}", "--defect", "hole", "--manifest",
                   manifest_path, "--data", toy_root, "--category", "toy", "--partition", 1, "--n", 4,
                   "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resolution"] == [32, 32] and results["sources"][0]["from"] == "checkpoints"


def test_a_generated_folder_is_scored_with_its_masks(toy_root, tmp_path):
    """A folder laid out like `generate` output (images/, masks/, index.csv with a defect_type column)."""
    folder = tmp_path / "synth"
    index = scan_category(toy_root, "toy")
    rows = []
    for i, item in enumerate(index.defects["stain"][:5]):
        for sub, src in (("images", item.image), ("masks", item.mask)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / sub / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "mask": f"masks/{i}.png", "defect_type": "stain" if i < 4 else "hole"})
    with open(folder / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "eval"
    assert run_cli("--images", folder, "--data", toy_root, "--category", "toy", "--partition", 1,
                   "--defect", "stain", "--n", 16, "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    row = results["defects"]["stain"]["rows"][1]
    assert row["source"] == "images: synth" and row["n"] == 4 and results["resolution"] == [64, 64]
    assert any("only 4 'stain' images" in w for w in results["warnings"])


def test_kid_and_lpips_still_run_when_their_networks_are_there(toy_root, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_cli("--aug", "crop-paste", "--data", toy_root, "--category", "toy", "--partition", 1, "--defect", "hole",
                   "--n", 4, "--resolution", 32, "--kid-subsets", 3, "--random-features", "--out", out) == 0
    assert "skipped" not in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    row = results["defects"]["hole"]["rows"][1]
    assert results["kid_lpips"] == {"computed": True, "why": None, "random_features": True}
    assert row["kid"]["n_generated"] == 4 and row["kid"]["n_real"] == 6 and row["kid"]["weights"].startswith("random")
    assert row["clustered_lpips"]["n_generated"] == 4 and len(row["clustered_lpips"]["cluster_sizes"]) == 6
    assert "KID x1e3" in (out / "report.md").read_text()


def _other_base_manifest(toy_root, reference: dict, tmp_path):
    """A manifest whose P1 'hole' base set differs from the one the generators were trained on."""
    trained = reference["partitions"][0]["defects"]["hole"]["base"]
    for seed in range(1, 50):
        manifest = make_manifest(scan_category(toy_root, "toy"), partitions=1, seed=seed)
        if manifest["partitions"][0]["defects"]["hole"]["base"] != trained:
            return write_json_atomic(manifest, tmp_path / "other.json")
    raise AssertionError("no other split found")


@pytest.mark.parametrize("case, message", [
    ("unknown-defect", "no defect type 'dent'"),
    ("partition-not-in-manifest", "partition 5 is not in the manifest"),
    ("dfmgan-without-generators", "--aug dfmgan needs --generators DIR"),
    ("index-lacks-partition", "no generators for partition 2"),
    ("another-base-set", "trained on another base set"),
    ("painters-another-base-set", "trained on another base set"),
    ("no-painters-in-folder", "no inpaint painters here"),
    ("painter-checkpoint-without-inpaint", "but --aug has no inpaint"),
    ("old-flag", "--generated is gone"),
    ("unknown-aug", "--aug nosuch: not a generator"),
    ("missing-weights-file", "Inception-v3 (KID) weights file not found"),
    ("nothing-to-score", "nothing to score"),
])
def test_bad_input_is_one_line_and_exit_2(toy_root, split, generators_dir, painters_dir, tmp_path, capsys, case,
                                         message):
    manifest, manifest_path = split
    base = ["--data", toy_root, "--category", "toy", "--out", tmp_path / "eval", "--n", 4, "--resolution", 32]
    args = {
        "unknown-defect": ["--aug", "crop-paste", "--partition", 1, "--defect", "dent"],
        "partition-not-in-manifest": ["--aug", "crop-paste", "--partition", 5, "--manifest", manifest_path],
        "dfmgan-without-generators": ["--aug", "dfmgan", "--partition", 1],
        "index-lacks-partition": ["--aug", "dfmgan", "--partition", 2, "--defect", "hole", "--generators", generators_dir,
                                  "--manifest", manifest_path],
        "another-base-set": ["--aug", "dfmgan", "--partition", 1, "--defect", "hole", "--generators", generators_dir,
                             "--manifest", _other_base_manifest(toy_root, manifest, tmp_path)],
        "painters-another-base-set": ["--aug", "inpaint", "--partition", 1, "--defect", "hole", "--generators",
                                      painters_dir, "--manifest", _other_base_manifest(toy_root, manifest, tmp_path)],
        "no-painters-in-folder": ["--aug", "inpaint", "--partition", 1, "--defect", "hole", "--generators",
                                  generators_dir, "--manifest", manifest_path],
        "painter-checkpoint-without-inpaint": ["--aug", "dfmgan", "--partition", 1, "--defect", "hole", "--manifest",
                                               manifest_path, "--checkpoint",
                                               f"hole={painters_dir / 'inpaint/p1/hole/inpaint_hole.pt'}"],
        "old-flag": ["--generated", "crop-paste", "--partition", 1],
        "unknown-aug": ["--aug", "nosuch", "--partition", 1],
        "missing-weights-file": ["--aug", "crop-paste", "--partition", 1, "--defect", "hole",
                                 "--inception-weights", tmp_path / "none.pth"],
        "nothing-to-score": ["--partition", 1],
    }[case]
    code = run_cli(*base, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "eval" / "results.json").exists()
