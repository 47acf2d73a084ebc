"""A generator whose training was stopped (killed, out of time) before the cache recorded it continues from its
last saved step on the next run, ending where an uninterrupted run ends; a stopped run from another base set is
refused, not continued."""

import json
import shutil

import pytest
import torch
import yaml

from inspect_train.data.category import load_category
from inspect_train.errors import InputError
from generators.dfmgan.spec import backbone
from inspect_train.tasks.generators import open_cache


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


def _dfmgan(toy, folder, defect_steps, said, gan_config="dfmgan-tiny"):
    options = {"config": gan_config, "backbone_steps": 1, "defect_steps": defect_steps}
    return open_cache("dfmgan", toy, options, folder, seed=0, device="cpu", manifest_path="m.json", progress=False,
                      say=said.append)


def _painters(toy, folder, steps, said):
    """The painters' cache whose own folder is `folder` (a run keeps it in <generators>/inpaint)."""
    return open_cache("inpaint", toy, {"steps": steps}, folder.parent, seed=0, device="cpu", manifest_path="m.json",
                      progress=False, say=said.append)


def _forget_trained_generators(folder):
    """The index as a run killed during training leaves it: the generator's checkpoint is there, unrecorded."""
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text())
    index["defects"] = {}
    index_path.write_text(json.dumps(index))


def _count_steps(monkeypatch, trainer_module) -> list:
    """One entry per optimisation step the trainer in `trainer_module` takes (it updates its EMA once a step)."""
    steps, real_update = [], trainer_module.update_ema

    def counted(*args, **kwargs):
        steps.append(1)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "update_ema", counted)
    return steps


def _same_weights(a: dict, b: dict, keys) -> None:
    for key in keys:
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_a_stopped_stage2_run_continues_to_the_uninterrupted_result(toy, tmp_path, monkeypatch):
    import generators.dfmgan.train_defect as trainer
    from generators.dfmgan.checkpoint import load_checkpoint
    from generators.dfmgan.config import load_config

    config = load_config("dfmgan-tiny")
    config["stage2"]["mask_guard_every"] = 1  # the guard's record then has a check at every step of both calls
    gan_config = tmp_path / "dfmgan-guard-every-step.yaml"
    gan_config.write_text(yaml.safe_dump(config))
    names = toy.defects["hole"].names[:3]
    stopped, straight, said = tmp_path / "stopped", tmp_path / "straight", []
    backbone(_dfmgan(toy, stopped, 2, said, str(gan_config)))
    shutil.copytree(stopped, straight)  # the same backbone under both folders
    _dfmgan(toy, stopped, 2, said, str(gan_config)).checkpoints(1, {"hole": names})
    _forget_trained_generators(stopped)

    said.clear()
    steps = _count_steps(monkeypatch, trainer)
    continued = load_checkpoint(_dfmgan(toy, stopped, 4, said, str(gan_config)).checkpoints(1, {"hole": names})["hole"])
    assert any("continuing the stopped run's checkpoint" in line for line in said), said
    assert not any("training P1 'hole'" in line for line in said), said
    assert len(steps) == 2, "steps 3 and 4 only: steps 1 and 2 are not trained again"
    uninterrupted = load_checkpoint(
        _dfmgan(toy, straight, 4, [], str(gan_config)).checkpoints(1, {"hole": names})["hole"])
    assert continued["step"] == uninterrupted["step"] == 4
    _same_weights(continued, uninterrupted, ("G", "G_ema", "D", "D_match"))
    # the empty-mask guard's record keeps the stopped call's checks: the same record as the uninterrupted run's
    assert [step for step, _ in continued["mask_guard"]["checks"]] == [1, 2, 3, 4]
    assert continued["mask_guard"] == uninterrupted["mask_guard"]
    assert json.loads((stopped / "index.json").read_text())["defects"]["p1"]["hole"]["base"] == sorted(names)


def test_a_stopped_stage2_run_of_another_base_set_is_refused(toy, tmp_path):
    names = toy.defects["hole"].names
    _dfmgan(toy, tmp_path, 1, []).checkpoints(1, {"hole": names[:3]})
    _forget_trained_generators(tmp_path)
    with pytest.raises(InputError, match="trained on another base") as refused:
        _dfmgan(toy, tmp_path, 2, []).checkpoints(1, {"hole": names[1:4]})
    assert "another --generators folder" in str(refused.value), "the cache's remedy, not the gan commands'"
    assert "--resume" not in str(refused.value)


def test_a_stopped_painter_continues_to_the_uninterrupted_result(toy, tmp_path, monkeypatch):
    import generators.inpaint.train as trainer
    from generators.inpaint.checkpoint import load_painter_checkpoint

    names = toy.defects["hole"].names[:3]
    said = []
    _painters(toy, tmp_path / "stopped" / "inpaint", 1, said).checkpoints(1, {"hole": names})
    _forget_trained_generators(tmp_path / "stopped" / "inpaint")
    said.clear()
    steps = _count_steps(monkeypatch, trainer)
    continued = load_painter_checkpoint(
        _painters(toy, tmp_path / "stopped" / "inpaint", 2, said).checkpoints(1, {"hole": names})["hole"])
    assert any("continuing the stopped run's checkpoint" in line for line in said), said
    assert len(steps) == 1, "step 2 only"
    uninterrupted = load_painter_checkpoint(
        _painters(toy, tmp_path / "straight" / "inpaint", 2, []).checkpoints(1, {"hole": names})["hole"])
    assert continued["step"] == uninterrupted["step"] == 2
    _same_weights(continued, uninterrupted, ("painter", "painter_ema", "D_local", "D_match"))
