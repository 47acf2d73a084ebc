"""The few-shot split: sizes, disjointness, distinct partitions, determinism, manifest checks."""

import json

import pytest

from inspect_train.cli import main
from inspect_train.data.mvtec import scan_category
from inspect_train.errors import InputError
from inspect_train.protocol import base_size, get_partition, make_manifest, read_manifest


@pytest.mark.parametrize("n,expected", [(2, 1), (3, 1), (8, 3), (9, 3), (14, 5), (18, 6), (39, 13)])
def test_base_size_is_a_rounded_third(n, expected):
    assert base_size(n) == expected


def test_manifest_splits(toy_root):
    index = scan_category(toy_root, "toy")
    manifest = make_manifest(index, partitions=3, seed=0)
    assert manifest["category"] == "toy" and manifest["seed"] == 0
    assert [p["partition"] for p in manifest["partitions"]] == [1, 2, 3]
    for defect in index.defect_types:
        names = {i.name for i in index.defects[defect]}
        bases = []
        for part in manifest["partitions"]:
            split = part["defects"][defect]
            assert not set(split["base"]) & set(split["test"])
            assert set(split["base"]) | set(split["test"]) == names
            assert len(split["base"]) == base_size(len(names))
            bases.append(frozenset(split["base"]))
        assert len(set(bases)) == 3, "partitions must differ"
        # test/good is never in a base set
        good = {p.name for p in index.test_good}
        assert not any(set(b) & good - names for b in bases)


def test_manifest_is_deterministic_and_seed_dependent(toy_root):
    index = scan_category(toy_root, "toy")
    assert make_manifest(index, 3, 0) == make_manifest(index, 3, 0)
    assert make_manifest(index, 3, 0) != make_manifest(index, 3, 1)


def test_split_command_round_trip(toy_root, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["data", "split", "--data", str(toy_root), "--category", "toy", "--partitions", "2", "--seed", "5", "--out", str(out)]) == 0
    manifest = read_manifest(out, scan_category(toy_root, "toy"))
    assert manifest["seed"] == 5 and len(manifest["partitions"]) == 2
    assert get_partition(manifest, 2)["partition"] == 2
    with pytest.raises(InputError):
        get_partition(manifest, 3)


def test_read_manifest_rejects_overlap_and_foreign_files(toy_root, tmp_path):
    index = scan_category(toy_root, "toy")
    manifest = make_manifest(index, 1, 0)
    split = manifest["partitions"][0]["defects"]["hole"]
    split["test"].append(split["base"][0])
    path = tmp_path / "overlap.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="both base and test"):
        read_manifest(path, index)
    manifest = make_manifest(index, 1, 0)
    manifest["partitions"][0]["defects"]["hole"]["base"] = ["nope.png"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="nope.png"):
        read_manifest(path, index)
    path.write_text("{broken")
    with pytest.raises(InputError, match="not a valid JSON"):
        read_manifest(path)
