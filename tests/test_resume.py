"""--resume: arms split over commands into one --out assemble into the table one command gives; a finished arm
with other settings is refused in one line; an unreadable one is trained again."""

import json

import pytest
import torch

from inspect_train.cli import main
from inspect_train.report import read_results
from inspect_train.tasks.resume import FINISHED, run_stamp


def classify(toy_root, tiny_config, out, *argv) -> int:
    return main(["classify", "--data", str(toy_root), "--category", "toy", "--config", tiny_config,
                 "--partitions", "1", "--quiet", "--device", "cpu", "--out", str(out), *argv])


@pytest.fixture(scope="module")
def whole_and_split(toy_root, tiny_config, tmp_path_factory):
    """One command with the baseline and crop-paste; the same arms as two commands, then assembled with --resume."""
    work = tmp_path_factory.mktemp("resume")
    whole, split = work / "whole", work / "split"
    assert classify(toy_root, tiny_config, whole, "--aug", "crop-paste") == 0
    assert classify(toy_root, tiny_config, split, "--aug", "crop-paste", "--no-baseline") == 0
    assert classify(toy_root, tiny_config, split, "--aug", "none") == 0
    before = {arm: (split / "P1" / arm / FINISHED).stat().st_mtime_ns for arm in ("none", "crop-paste")}
    assert classify(toy_root, tiny_config, split, "--aug", "crop-paste", "--resume") == 0
    after = {arm: (split / "P1" / arm / FINISHED).stat().st_mtime_ns for arm in ("none", "crop-paste")}
    assert before == after  # read back, not trained and saved again
    return read_results(whole), read_results(split), split


def test_split_then_resume_gives_the_whole_run(whole_and_split):
    whole, split, _ = whole_and_split
    a, b = whole["partitions"][0], split["partitions"][0]
    assert b["arms"] == a["arms"]
    assert b["tests"] == a["tests"] and "crop-paste" in b["tests"]  # paired tests from the read-back outputs
    assert b["real_images_used"] == a["real_images_used"]
    assert all(b["runs"][arm]["read_back"] for arm in ("none", "crop-paste"))
    assert whole["summary"] == split["summary"]


def test_other_settings_are_refused_in_one_line(whole_and_split, toy_root, tiny_config, capsys):
    _, _, split = whole_and_split
    saved = (split / "P1" / "none" / FINISHED).read_bytes()
    code = classify(toy_root, tiny_config, split, "--aug", "none", "--resume", "--steps", "4")
    err = capsys.readouterr().err
    assert code == 2 and "settings.steps: 3 there, 4 now" in err and "Traceback" not in err
    assert (split / "P1" / "none" / FINISHED).read_bytes() == saved  # nothing lost


def test_unreadable_finished_arm_is_trained_again(whole_and_split, toy_root, tiny_config, capsys):
    whole_results, _, split = whole_and_split
    out = split.parent / "whole"
    first = whole_results["partitions"][0]["arms"]["none"]
    finished = out / "P1" / "none" / FINISHED
    finished.write_bytes(finished.read_bytes()[:200])  # what a write killed half-way leaves
    assert classify(toy_root, tiny_config, out, "--aug", "none", "--resume") == 0
    assert "cannot be read" in capsys.readouterr().out
    again = read_results(out)["partitions"][0]
    assert again["arms"]["none"] == first and "read_back" not in again["runs"]["none"]
    assert torch.load(out / "P1" / "none" / FINISHED, weights_only=False)["metrics"] == first


def test_stamp_ignores_what_does_not_change_an_arm():
    from argparse import Namespace

    from inspect_train.settings import ClassifySettings

    settings = ClassifySettings()
    split = {"seed": 0, "partitions": [{"partition": 1, "defects": {"hole": {"base": ["a.png"], "test": ["b.png"]}}}]}
    base = dict(aug=["crop-paste"], partitions=[1], out="a", threads=1, quiet=False, device="cpu", resume=False,
                seed=0, generators=None)
    one = run_stamp("classify", settings, Namespace(**base), "digest", "toy", (32, 32), split)
    other = run_stamp("classify", settings, Namespace(**{**base, "aug": ["none"], "partitions": [2], "out": "b",
                                                         "threads": 2, "quiet": True, "resume": True,
                                                         "generators": "elsewhere"}),
                      "digest", "toy", (32, 32), split)
    assert one == other
    assert one != run_stamp("classify", settings, Namespace(**{**base, "seed": 1}), "digest", "toy", (32, 32), split)
    assert one != run_stamp("classify", settings, Namespace(**base), "other data", "toy", (32, 32), split)
    assert one != run_stamp("segment", settings, Namespace(**base), "digest", "toy", (32, 32), split)
    assert json.loads(json.dumps(one)) == one


def test_an_arm_is_stamped_with_its_own_generators_only():
    from argparse import Namespace

    from inspect_train.settings import ClassifySettings
    from inspect_train.tasks.resume import arm_stamp

    split = {"seed": 0, "partitions": [{"partition": 1, "defects": {"hole": {"base": ["a.png"], "test": ["b.png"]}}}]}
    args = Namespace(aug=["crop-paste"], seed=0)

    def stamps(generators):
        stamp = run_stamp("classify", ClassifySettings(generators=generators), args, "d", "toy", (32, 32), split)
        return {arm: arm_stamp(stamp, arm, 1, None) for arm in ("none", "crop-paste", "inpaint", "dfmgan")}

    plain = stamps({})
    painter = stamps({"inpaint": {"steps": 7}})
    assert painter["none"] == plain["none"] and painter["crop-paste"] == plain["crop-paste"]
    assert painter["dfmgan"] == plain["dfmgan"]
    assert painter["inpaint"] != plain["inpaint"]
    assert painter["inpaint"]["settings"]["generators"] == {"inpaint": {"steps": 7}}
    # the painter drawing DFMGAN's masks depends on DFMGAN's settings too
    both = stamps({"inpaint": {"mask_source": "dfmgan"}, "dfmgan": {"defect_steps": 2}})
    assert set(both["inpaint"]["settings"]["generators"]) == {"inpaint", "dfmgan"}
    assert both["crop-paste"] == plain["crop-paste"]
