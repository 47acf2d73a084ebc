"""Foundation: toy data, loading, `data check`, bad input handling."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inspect_train.cli import main
from inspect_train.data.category import load_category
from inspect_train.data.images import parse_resolution, resize_mask
from inspect_train.data.mvtec import scan_category
from inspect_train.data.toy import write_toy_dataset
from inspect_train.errors import InputError


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_toy_layout_and_counts(toy_root):
    index = scan_category(toy_root, "toy")
    assert len(index.train_good) >= 200
    assert len(index.test_good) >= 30
    assert index.defect_types == ["hole", "scratch", "stain"]
    for items in index.defects.values():
        assert 12 <= len(items) <= 30


def test_toy_same_seed_same_bytes_and_other_seed_differs(toy_root, tmp_path):
    again = write_toy_dataset(tmp_path / "a", seed=0)
    other = write_toy_dataset(tmp_path / "b", seed=1)
    assert tree_digest(again / "toy") == tree_digest(toy_root / "toy")
    assert tree_digest(other / "toy") != tree_digest(toy_root / "toy")


def test_toy_is_textured_and_masks_are_exact(toy_root):
    data = load_category(toy_root, "toy")
    good = data.train_good.images.float()
    assert good.std(dim=(2, 3)).mean() > 3, "surface should be textured, not flat"
    for defect, image_set in data.defects.items():
        assert image_set.masks.flatten(1).any(1).all(), defect
    # Defect pixels differ from their surroundings; the types look different (mean colour inside the mask).
    inside = {d: (s.images.float() * s.masks).sum((0, 2, 3)) / s.masks.sum() / 1 for d, s in data.defects.items()}
    assert torch.dist(inside["hole"], inside["scratch"]) > 50
    assert torch.dist(inside["stain"], inside["scratch"]) > 50
    assert torch.dist(inside["hole"], inside["stain"]) > 30


def test_load_category_resizes_images_and_binary_masks(toy_root):
    data = load_category(toy_root, "toy", size=(32, 48))
    assert data.size == (32, 48)
    assert data.channels == 3
    masks = data.defects["scratch"].masks
    assert masks.dtype == torch.bool and masks.shape[1:] == (1, 32, 48)
    assert masks.flatten(1).any(1).all()


def test_resize_mask_keeps_thin_defects():
    mask = np.zeros((64, 64), dtype=bool)
    mask[10, 5:60] = True  # one-pixel line that nearest-neighbour shrinking at 1/4 may skip
    small = resize_mask(mask, (16, 16))
    assert small.any()
    assert small.dtype == torch.bool


def test_parse_resolution():
    assert parse_resolution("64") == (64, 64)
    assert parse_resolution("128x320") == (128, 320)
    assert parse_resolution(None) is None
    with pytest.raises(InputError):
        parse_resolution("big")


def test_data_check_prints_table(toy_root, capsys):
    assert main(["data", "check", "--data", str(toy_root), "--category", "toy"]) == 0
    out = capsys.readouterr().out
    for token in ("train/good", "test/good", "test/hole", "test/scratch", "test/stain", "64x64", "%"):
        assert token in out
    assert main(["data", "check", "--data", str(toy_root), "--category", "toy", "--resolution", "32"]) == 0
    assert "after resize" in capsys.readouterr().out


def test_data_toy_command_writes_dataset(tmp_path, capsys):
    assert main(["data", "toy", "--out", str(tmp_path), "--seed", "3"]) == 0
    assert (tmp_path / "toy" / "train" / "good").is_dir()
    assert "--category toy" in capsys.readouterr().out


# ---- bad input: one line, exit code 2, nothing written ----------------------------------------------

@pytest.fixture
def broken_copy(toy_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(toy_root / "toy", root / "toy")
    return root


def _first(root, defect="hole"):
    image = sorted((root / "toy" / "test" / defect).iterdir())[0]
    return image, root / "toy" / "ground_truth" / defect / f"{image.stem}_mask.png"


def break_missing_mask(root):
    image, mask = _first(root)
    mask.unlink()
    return mask.name


def break_mask_size(root):
    _, mask = _first(root)
    Image.new("L", (20, 30), 255).save(mask)
    return "20x30"


def break_corrupt_image(root):
    image, _ = _first(root)
    image.write_bytes(b"not a png at all")
    return image.name


def break_empty_mask(root):
    _, mask = _first(root)
    Image.new("L", (64, 64), 0).save(mask)
    return "empty"


def break_too_few(root):
    for image in sorted((root / "toy" / "test" / "stain").iterdir())[1:]:
        image.unlink()
    return "stain"


def break_category(root):
    shutil.rmtree(root / "toy")
    return "toy"


BREAKERS = [break_missing_mask, break_mask_size, break_corrupt_image, break_empty_mask, break_too_few, break_category]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("action", ["check", "split"])
def test_bad_input_is_one_line_exit_2(broken_copy, tmp_path, capsys, breaker, action):
    clue = breaker(broken_copy)
    out = tmp_path / "manifest.json"
    argv = ["data", action, "--data", str(broken_copy), "--category", "toy"]
    if action == "split":
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert clue in err
    assert "Traceback" not in err
    assert not out.exists()


def test_console_script_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "inspect_train", "data", "check", "--data", str(tmp_path), "--category", "nope"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "category 'nope' not found" in result.stderr


def test_help_lists_every_command_group():
    result = subprocess.run([sys.executable, "-m", "inspect_train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for group in ("data", "gan", "generate", "classify", "segment", "evaluate-gen"):
        assert group in result.stdout
