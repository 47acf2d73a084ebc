"""`inspect-train evaluate-gen` end to end on toy data, with randomly initialised feature networks."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from inspect_train.cli import main
from inspect_train.data.mvtec import scan_category
from inspect_train.protocol import make_manifest, write_json_atomic

FAST = ["--kid-subsets", "5", "--batch", "16", "--random-features"]


@pytest.fixture(scope="session")
def small_root(toy_root, tmp_path_factory):
    """The toy category cut to 6 images per defect type: Inception runs at 299x299 whatever the size, so fewer is faster."""
    root = tmp_path_factory.mktemp("small-toy")
    index = scan_category(toy_root, "toy")
    folder = root / "toy"
    for sub, paths in (("train/good", index.train_good[:24]), ("test/good", index.test_good[:4])):
        (folder / sub).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, folder / sub / path.name)
    for defect, items in index.defects.items():
        (folder / "test" / defect).mkdir(parents=True)
        (folder / "ground_truth" / defect).mkdir(parents=True)
        for item in items[:6]:
            shutil.copy(item.image, folder / "test" / defect / item.image.name)
            shutil.copy(item.mask, folder / "ground_truth" / defect / item.mask.name)
    return root


@pytest.fixture(scope="session")
def generated_folder(toy_root, tmp_path_factory):
    """A folder laid out like `inspect-train generate` output: images/, masks/, goods/, index.csv.

    The 'generated' images are real toy `stain` images, listed as defect type `hole`
    (12 rows) and `scratch` (4 rows), so the index filter has something to drop.
    """
    out = tmp_path_factory.mktemp("generated")
    index = scan_category(toy_root, "toy")
    rows = []
    for i, item in enumerate(index.defects["stain"][:16]):
        name = f"{i:06d}.png"
        for sub, src in (("images", item.image), ("masks", item.mask), ("goods", index.train_good[i])):
            (out / sub).mkdir(exist_ok=True)
            shutil.copy(src, out / sub / name)
        rows.append({"image": f"images/{name}", "mask": f"masks/{name}", "good": f"goods/{name}",
                     "defect_type": "hole" if i < 12 else "scratch"})
    with open(out / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def run_cli(args: list[str]) -> int:
    return main(["evaluate-gen", *args])


def test_folder_end_to_end_records_everything(small_root, generated_folder, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_cli(["--generated", str(generated_folder), "--data", str(small_root), "--category", "toy",
                    "--defect", "hole", "--n-kid", "8", "--n-lpips", "6", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "KID x1e3 =" in printed and "RANDOM FEATURES" in printed

    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["random_features"] is True
    assert run["kid"]["weights"].startswith("random-init")
    assert run["generated"]["kind"] == "folder" and run["generated"]["picked"] == "index index.csv"
    assert run["generated"]["available"] == 12  # only the rows of type 'hole', no masks or goods
    assert run["real"]["set"] == "all" and run["real"]["n"] == 6 and run["real"]["partition"] is None
    assert run["kid"]["n_generated"] == 8 and run["kid"]["subset_size"] == 6  # min(1000, 6 real, 8 generated)
    assert run["kid"]["x1e3_mean"] == pytest.approx(run["kid"]["mean"] * 1e3)
    lpips = run["clustered_lpips"]
    assert lpips["n_generated"] == 6 and sum(lpips["cluster_sizes"]) == 6 and len(lpips["cluster_sizes"]) == 6
    assert lpips["value"] > 0

    report = (out / "report.md").read_text()
    assert report.count("| when (UTC) |") == 1 and report.count("RANDOM (test only)") == 1
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())


def test_partition_base_part_and_exact_repeats(small_root, generated_folder, tmp_path):
    out = tmp_path / "eval"
    manifest = make_manifest(scan_category(small_root, "toy"), partitions=3, seed=5)
    write_json_atomic(manifest, tmp_path / "manifest.json")
    args = ["--generated", str(generated_folder), "--data", str(small_root), "--category", "toy", "--defect", "hole",
            "--manifest", str(tmp_path / "manifest.json"), "--partition", "2", "--real-set", "base",
            "--n-kid", "4", "--n-lpips", "4", "--out", str(out), *FAST]
    assert run_cli(args) == 0
    assert run_cli(args) == 0
    results = json.loads((out / "results.json").read_text())
    first, second = results["runs"]
    split = manifest["partitions"][1]["defects"]["hole"]
    assert first["real"]["set"] == "base" and first["real"]["partition"] == 2
    assert first["real"]["names"] == split["base"] and first["real"]["n"] == len(split["base"])
    assert first["real"]["manifest"] == str((tmp_path / "manifest.json").resolve())
    for metric, key in (("kid", "x1e3_mean"), ("kid", "x1e3_std"), ("clustered_lpips", "value")):
        assert first[metric][key] == second[metric][key]
    assert (out / "report.md").read_text().count("| when (UTC) |") == 1


@pytest.fixture(scope="session")
def hole_checkpoint(small_root, tmp_path_factory):
    """An untrained (0-step) tiny DFMGAN stage-2 checkpoint that records partition 1 of a manifest."""
    from generators.dfmgan.api import fit_backbone, fit_defect, load_config
    from inspect_train.data.category import load_category

    work = tmp_path_factory.mktemp("dfmgan")
    toy = load_category(small_root, "toy", size=(32, 32))
    manifest = make_manifest(toy.index, partitions=3, seed=0)
    manifest_path = write_json_atomic(manifest, work / "manifest.json")
    base = manifest["partitions"][0]["defects"]["hole"]["base"]
    hole = toy.defects["hole"].select(base)
    backbone = fit_backbone(toy.train_good.images[:8], load_config("dfmgan-tiny"), work / "bb", steps=0, progress=False)
    return fit_defect(backbone, hole.images, hole.masks, "hole", work / "hole", steps=0, progress=False,
                      extra={"manifest": str(manifest_path), "partition": 1, "category": "toy"}), manifest


def test_checkpoint_is_sampled_on_the_fly(small_root, hole_checkpoint, tmp_path):
    checkpoint, manifest = hole_checkpoint
    out = tmp_path / "eval"
    assert run_cli(["--generated", str(checkpoint), "--data", str(small_root), "--category", "toy", "--defect", "hole",
                    "--n-kid", "4", "--n-lpips", "4", "--out", str(out), *FAST]) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["generated"]["kind"] == "dfmgan-checkpoint"
    assert run["generated"]["checkpoint_info"]["partition"] == 1
    assert run["kid"]["n_generated"] == 4 and run["clustered_lpips"]["n_generated"] == 4
    # the checkpoint names partition 1 and its manifest: scored against that partition's unseen test part
    assert run["real"]["set"] == "test" and run["real"]["partition"] == 1
    assert run["real"]["names"] == manifest["partitions"][0]["defects"]["hole"]["test"]
    assert run["real"]["resized_to"] == [32, 32]

    assert run_cli(["--generated", str(checkpoint), "--data", str(small_root), "--category", "toy", "--defect", "stain",
                    "--out", str(tmp_path / "other"), *FAST]) == 2


def test_classic_generator_is_built_from_the_partition_base_set(small_root, tmp_path):
    out = tmp_path / "eval"
    assert run_cli(["--generated", "crop-paste", "--data", str(small_root), "--category", "toy", "--defect", "stain",
                    "--partition", "3", "--real-set", "base", "--resolution", "32", "--n-kid", "4", "--n-lpips", "4",
                    "--out", str(out),
                    *FAST]) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    manifest = json.loads((out / "manifest.json").read_text())  # made like `data split` (3 partitions, seed 0)
    split = manifest["partitions"][2]["defects"]["stain"]
    assert run["generated"]["kind"] == "crop-paste" and run["generated"]["resolution"] == [32, 32]
    assert run["real"]["set"] == "base" and run["real"]["names"] == split["base"]
    assert run_cli(["--generated", "perlin", "--data", str(small_root), "--category", "toy", "--defect", "stain",
                    "--out", str(tmp_path / "no-partition"), *FAST]) == 2


def test_missing_weights_exit_2_with_one_line(small_root, generated_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    out = tmp_path / "eval"
    code = run_cli(["--generated", str(generated_folder), "--data", str(small_root), "--category", "toy",
                    "--defect", "hole", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "weights-inception-2015-12-05-6726825d.pth" in err and str(tmp_path / "empty-torch-home") in err
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("change, message", [
    (["--defect", "dent"], "no defect type 'dent'"),
    (["--generated", "/no/such/folder"], "is neither a folder, a checkpoint file nor one of crop-paste"),
    (["--real-set", "test"], "needs --partition"),
    (["--n-kid", "0"], "--n-kid must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(small_root, generated_folder, tmp_path, capsys, change, message):
    args = {"--generated": str(generated_folder), "--data": str(small_root), "--category": "toy", "--defect": "hole",
            "--out": str(tmp_path / "eval")}
    for flag, value in zip(change[::2], change[1::2]):
        args[flag] = value
    code = run_cli([x for kv in args.items() for x in kv] + FAST)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_a_generate_folder_tells_its_partition(tmp_path):
    from inspect_train.commands.evaluate_gen import generate_info

    (tmp_path / "generate.json").write_text(json.dumps({"info": {"hole": {"partition": 2, "manifest": "m.json"}}}))
    assert generate_info(tmp_path, "hole") == {"partition": 2, "manifest": "m.json"}
    assert generate_info(tmp_path, "stain") == {}
    (tmp_path / "generate.json").write_text("not json")
    assert generate_info(tmp_path, "hole") == {}
