"""DFMGAN training at tiny size: frozen backbone in stage 2, exact resume, divergence guard, CLI errors."""

import copy
import subprocess
import sys

import pytest
import torch

import generators.dfmgan.train_backbone as tb
from generators.dfmgan.api import fit_backbone, fit_defect, load_config
from generators.dfmgan.checkpoint import TrainingDiverged, load_checkpoint
from inspect_train.cli import main
from inspect_train.data.category import load_category


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def tiny():
    return load_config("dfmgan-tiny")


@pytest.fixture(scope="module")
def backbone(toy, tiny, tmp_path_factory):
    return fit_backbone(toy.train_good.images[:40], tiny, tmp_path_factory.mktemp("bb"), steps=3, progress=False)


def _hole(toy):
    return toy.defects["hole"].images[:5], toy.defects["hole"].masks[:5]


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage2_trains_only_the_defect_modules(backbone, toy, tmp_path):
    images, masks = _hole(toy)
    start = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "a", steps=0, progress=False))
    after = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "b", steps=2, progress=False))
    stage1 = load_checkpoint(backbone)
    stage2_prefixes = ("defect_mapping.", "res_blocks.", "to_mask.")
    changed = {k: not torch.equal(start["G"][k], after["G"][k]) for k in start["G"]}
    backbone_keys = [k for k in changed if not k.startswith(stage2_prefixes)]
    stage2_params = [k for k in changed if k.startswith(stage2_prefixes) and not k.endswith("w_avg")]
    assert backbone_keys and stage2_params
    assert not any(changed[k] for k in backbone_keys), [k for k in backbone_keys if changed[k]]
    assert all(changed[k] for k in stage2_params), [k for k in stage2_params if not changed[k]]
    # the frozen backbone is the stage-1 G, bit for bit (as the reference resumes), not its EMA; the stage-2 EMA
    # starts from the stage-1 EMA and its backbone moves towards G's (no ramp-up in stage 2)
    assert all(torch.equal(after["G"][k], stage1["G"][k]) for k in backbone_keys)
    float_keys = [k for k in backbone_keys if start["G_ema"][k].is_floating_point() and not k.endswith("w_avg")]
    assert all(torch.equal(start["G_ema"][k], stage1["G_ema"][k]) for k in float_keys)
    moved = [k for k in float_keys if not torch.equal(stage1["G"][k], stage1["G_ema"][k])]
    assert moved, "a 3-step backbone should have G != G_ema"
    assert all(torch.dist(after["G_ema"][k], stage1["G"][k]) < torch.dist(stage1["G_ema"][k], stage1["G"][k])
               for k in moved)
    # D starts from the stage-1 D and is fine-tuned; D_match starts from scratch (its own shape)
    assert _equal_states(start["D"], stage1["D"])
    assert not _equal_states(after["D"], stage1["D"])
    assert start["D_match"]["from_rgb.weight"].shape[1] == toy.channels + 1
    # the tiny preset uses ADA: its state (p, the interval's partial signal) is in the checkpoint
    assert 0.0 <= after["ada"]["p"] <= 1.0 and after["ada"]["calls"] == 2
    # only the stage-2 modules are in G's optimiser
    n_opt = sum(len(g["params"]) for g in after["opt_G"]["param_groups"])
    assert n_opt == len(stage2_params)


def test_mode_seeking_partners_are_extra_samples(backbone, toy, tiny, tmp_path, monkeypatch):
    """D and D_match see N independent images (N distinct objects and noise); the mode-seeking partners of half of
    them are rendered beside the batch with the same object and noise and another defect code."""
    from generators.dfmgan.networks import Generator

    calls = []
    real = Generator.synthesize_defect

    def spy(self, w, w_defect, noise, with_good=True):
        if torch.is_grad_enabled():  # training steps, not the no-grad grids
            calls.append((w.detach().clone(), w_defect.detach().clone(), {r: [t.clone() for t in maps]
                                                                          for r, maps in noise.items()}))
        return real(self, w, w_defect, noise, with_good)

    monkeypatch.setattr(Generator, "synthesize_defect", spy)
    images, masks = _hole(toy)
    no_mixing = {**tiny, "stage2": {**tiny["stage2"], "style_mixing": 0.0}}
    fit_defect(backbone, images, masks, "hole", tmp_path / "plain", config=no_mixing, steps=1, progress=False)
    always = {**tiny, "stage2": {**tiny["stage2"], "style_mixing": 1.0}}
    fit_defect(backbone, images, masks, "hole", tmp_path / "mixed", config=always, steps=1, progress=False)
    assert calls[0][0].dim() == 2 and calls[1][0].dim() == calls[1][1].dim() == 3, "mixing on both mappings"
    calls[:] = calls[1:]
    batch = int(tiny["stage2"]["batch"])
    half = batch // 2
    (w, w_def, noise), = calls
    assert w.shape[0] == w_def.shape[0] == batch + half
    w, w_def = w.flatten(1), w_def.flatten(1)  # one style per block when the step mixed styles
    assert torch.cdist(w[:batch], w[:batch]).add(torch.eye(batch)).min() > 0, "N distinct objects"
    assert torch.equal(w[batch:], w[:half])
    assert torch.cdist(w_def, w_def).add(torch.eye(batch + half)).min() > 0, "every defect code differs"
    for maps in noise.values():
        for t in maps:
            assert torch.equal(t[batch:], t[:half]) and not torch.equal(t[:half], t[half:batch])


def test_stage1_mixes_styles(toy, tiny, tmp_path, monkeypatch):
    """Stage 1 with style_mixing 1.0 feeds the synthesis one style per block; 0.0 one style for all."""
    from generators.dfmgan.networks import Generator

    dims = []
    real = Generator.synthesize

    def spy(self, w, noise):
        if torch.is_grad_enabled():
            dims.append(w.dim())
        return real(self, w, noise)

    monkeypatch.setattr(Generator, "synthesize", spy)
    for p in (1.0, 0.0):
        config = {**tiny, "stage1": {**tiny["stage1"], "style_mixing": p}}
        fit_backbone(toy.train_good.images[:8], config, tmp_path / str(p), steps=1, progress=False)
    assert dims == [3, 2]


def test_bf16_autocast_trains_both_stages_with_fp32_weights(toy, tiny, tmp_path):
    """precision bf16 (what `auto` picks on CUDA) runs on the CPU too: both stages train, losses stay finite, the
    weights and checkpoints stay fp32; auto on the CPU is fp32, and an unknown precision is one clear error."""
    from generators.dfmgan.training import Runtime
    from inspect_train.errors import InputError

    config = copy.deepcopy(tiny)
    for stage in ("stage1", "stage2"):
        config[stage]["precision"] = "bf16"
    bb = fit_backbone(toy.train_good.images[:8], config, tmp_path / "bb", steps=2, progress=False)
    images, masks = _hole(toy)
    path = fit_defect(bb, images, masks, "hole", tmp_path / "s2", config=config, steps=2, progress=False)
    for state in (load_checkpoint(bb), load_checkpoint(path)):
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all()
                   for v in state["G"].values() if v.is_floating_point())
    assert Runtime({}, torch.device("cpu")).precision == "fp32"
    assert not Runtime({}, torch.device("cpu")).channels_last
    with pytest.raises(InputError, match="precision 'fp8'"):
        Runtime({"precision": "fp8"}, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_both_stages_train_on_cuda_in_auto_precision(toy, tiny, tmp_path):
    """On CUDA `auto` is bf16 autocast with channels_last: both stages train with finite fp32 weights, the
    process's cudnn settings come back after each stage (the downstream tasks keep benchmark off), and the
    trained generator samples on the GPU."""
    from generators.dfmgan.sampler import DFMGANGenerator
    from generators.dfmgan.training import Runtime

    runtime = Runtime({}, torch.device("cuda"))
    assert runtime.precision == "bf16" and runtime.channels_last
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        bb = fit_backbone(toy.train_good.images[:8], tiny, tmp_path / "bb", steps=3, device="cuda", progress=False)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, True)
        images, masks = _hole(toy)
        path = fit_defect(bb, images, masks, "hole", tmp_path / "s2", config=tiny, steps=3, device="cuda",
                          progress=False)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, True)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
    for state in (load_checkpoint(bb), load_checkpoint(path)):
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all()
                   for v in state["G"].values() if v.is_floating_point())
    sample = DFMGANGenerator({"hole": path}, device="cuda").sample(4, "hole", torch.Generator().manual_seed(0))
    assert sample.images.is_cuda and sample.images.shape[0] == 4 and torch.isfinite(sample.images).all()


def test_stage2_wiring_comes_from_the_stage2_config(backbone, toy, tiny, tmp_path):
    """A backbone trained before the wiring option (no key in its config) still gets the stage-2 config's wiring."""
    images, masks = _hole(toy)
    state = torch.load(backbone, weights_only=False)
    state["config"] = {k: v for k, v in state["config"].items() if k != "residual_input"}
    old = tmp_path / "old_backbone.pt"
    torch.save(state, old)
    path = fit_defect(old, images, masks, "hole", tmp_path / "s2", config=tiny, steps=0, progress=False)
    assert load_checkpoint(path)["config"]["residual_input"] == "injected"
    path = fit_defect(old, images, masks, "hole", tmp_path / "s2-old", steps=0, progress=False)
    assert "residual_input" not in load_checkpoint(path)["config"]


def test_backbone_resume_gives_identical_next_steps(toy, tiny, tmp_path):
    good = toy.train_good.images[:24]
    straight = load_checkpoint(fit_backbone(good, tiny, tmp_path / "a", steps=5, seed=7, progress=False))
    fit_backbone(good, tiny, tmp_path / "b", steps=2, seed=7, progress=False)
    resumed = load_checkpoint(fit_backbone(good, tiny, tmp_path / "b", steps=5, seed=7, resume=True, progress=False))
    assert resumed["step"] == straight["step"] == 5
    for key in ("G", "G_ema", "D"):
        assert _equal_states(straight[key], resumed[key]), key


def test_defect_resume_gives_identical_next_steps(backbone, toy, tmp_path):
    images, masks = _hole(toy)
    straight = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "a", steps=5, seed=3,
                                          progress=False))
    fit_defect(backbone, images, masks, "hole", tmp_path / "b", steps=1, seed=3, progress=False)
    resumed = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "b", steps=5, seed=3,
                                         resume=True, progress=False))
    for key in ("G", "G_ema", "D", "D_match"):
        assert _equal_states(straight[key], resumed[key]), key


def _poison_generator_loss(monkeypatch, at_call: int, factor: float) -> dict:
    """Stage 1's G loss times `factor` (nan, inf) at its `at_call`-th computation; returns the call counter."""
    calls = {"n": 0}
    real_loss = tb.g_nonsaturating

    def poisoned(logits):
        calls["n"] += 1
        loss = real_loss(logits)
        return loss * factor if calls["n"] == at_call else loss

    monkeypatch.setattr(tb, "g_nonsaturating", poisoned)
    return calls


def test_non_finite_loss_stops_and_keeps_last_checkpoint(toy, tiny, tmp_path, monkeypatch):
    config = copy.deepcopy(tiny)
    config["stage1"]["save_every"] = 1
    calls = _poison_generator_loss(monkeypatch, at_call=3, factor=float("nan"))
    with pytest.raises(TrainingDiverged, match="loss G is nan"):
        fit_backbone(toy.train_good.images[:16], config, tmp_path, steps=5, progress=False)
    state = load_checkpoint(tmp_path / "backbone.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["G"].values())


def test_divergence_is_caught_at_the_next_check_without_a_sync_per_step(toy, tiny, tmp_path, monkeypatch):
    """Losses are checked on the device and read at log steps and before saves: a NaN at step 6 stops the run
    at the step-10 log check, names the step it happened at, and the step-5 checkpoint stays the last one."""
    config = copy.deepcopy(tiny)
    config["stage1"].update(save_every=5, log_every=10, grid_every=1000)
    calls = _poison_generator_loss(monkeypatch, at_call=7, factor=float("inf"))
    with pytest.raises(TrainingDiverged, match="stopped at step 6: loss G is inf"):
        fit_backbone(toy.train_good.images[:16], config, tmp_path, steps=30, progress=False)
    assert calls["n"] == 10, "stopped at the first check after the divergence"
    assert load_checkpoint(tmp_path / "backbone.pt")["step"] == 5


def test_bad_inputs_are_one_line_exit_2(backbone, toy_root, tmp_path, capsys):
    state = load_checkpoint(backbone)
    state["config"] = {**state["config"], "category": "hazelnut"}
    other = tmp_path / "other_category.pt"
    torch.save(state, other)
    cases = [
        ["gan", "fit-defect", "--backbone", str(other), "--data", str(toy_root), "--category", "toy",
         "--defect", "hole", "--partition", "1", "--out", str(tmp_path)],
        ["gan", "fit-defect", "--backbone", str(backbone), "--data", str(toy_root), "--category", "toy",
         "--defect", "nosuch", "--partition", "1", "--out", str(tmp_path)],
        ["gan", "fit-defect", "--backbone", str(tmp_path / "missing.pt"), "--data", str(toy_root),
         "--category", "toy", "--defect", "hole", "--partition", "1", "--out", str(tmp_path)],
        ["gan", "fit-defect", "--backbone", str(backbone), "--data", str(toy_root), "--category", "toy",
         "--defect", "hole", "--partition", "9", "--out", str(tmp_path)],
        ["gan", "fit-backbone", "--data", str(toy_root), "--category", "toy", "--config", "dfmgan-tiny",
         "--resolution", "48", "--out", str(tmp_path)],
        ["generate", "--checkpoint", str(backbone), "--n", "2", "--out", str(tmp_path / "g")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("inspect-train: error:") and "\n" not in err, err


def test_cli_subprocess_reports_missing_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inspect_train", "generate", "--checkpoint",
                           str(tmp_path / "none.pt"), "--n", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "checkpoint not found" in proc.stderr


def _scalar_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in sorted(folder.rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_every_loss_term_reaches_tensorboard_in_both_stages(toy, tiny, tmp_path):
    """At the shipped tiny config lazy R1 runs before steps 0, 4, 8 and logging happens after steps 10, 20...:
    the two never meet, so R1 must be logged from its last computed value."""
    for stage in ("stage1", "stage2"):  # the case that lost R1: no step both computes and logs it
        every, r1 = tiny[stage]["log_every"], tiny[stage]["r1_interval"]
        assert not any((s + 1) % every == 0 for s in range(0, 10 * every, r1))
    steps = tiny["stage1"]["log_every"]
    backbone = fit_backbone(toy.train_good.images[:16], tiny, tmp_path / "s1", steps=steps, progress=False)
    assert _scalar_tags(tmp_path / "s1" / "tb") >= {f"stage1/loss_{k}" for k in ("G", "D", "R1")}
    images, masks = _hole(toy)
    fit_defect(backbone, images, masks, "hole", tmp_path / "s2", config=tiny, steps=tiny["stage2"]["log_every"],
               progress=False)
    stage2 = {"G", "G_adv", "G_match", "mode_seek", "D", "D_match", "R1", "R1_match"}
    assert _scalar_tags(tmp_path / "s2" / "tb") >= {f"stage2/{k}" for k in stage2}
