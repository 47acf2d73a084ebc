"""The generator seam: this file alone declares two generators and runs them through every command.

`toy-stamp` is classic (a square of the defect type's colour stamped on a good image); `toy-colour` is learned: its
"training" moves one colour per defect type towards the mean colour of the base images' defect pixels, a step at
a time, writing a checkpoint after each step, so the generic cache trains it when missing, reuses it, and continues
a stopped training. Both run through classify, segment, detect, evaluate-gen and generate, from the command line
and from the Python API, with no change to any other file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import inspect_train
from generators.base import SyntheticBatch
from generators.registry import register_generator, unregister_generator
from generators.spec import BuildRequest, GeneratorSpec, Learned, Option, Plan, TrainJob
from inspect_train.checkpoint import read_checkpoint, save_checkpoint
from inspect_train.cli import main
from inspect_train.errors import InputError

KIND = "toy-colour-checkpoint"
STEPS_TRAINED: list[tuple[str, int]] = []  # (defect type, step) of every training step taken


class Stamper:
    """Squares of one colour per defect type on random good images (the good image is the paired good)."""

    def __init__(self, colours: dict[str, torch.Tensor], goods: torch.Tensor, good_names, device):
        self.device = torch.device(device)
        self.defect_types = sorted(colours)
        self.colours = {t: c.to(self.device) for t, c in colours.items()}
        self.goods = goods.to(self.device).float().div(255)
        self.good_names = list(good_names)
        self.resolution = int(self.goods.shape[-1])
        self.info = {t: {"colour": [round(float(v), 4) for v in c]} for t, c in colours.items()}

    def paint(self, goods01, masks, defect_type, rng):
        return masks * self.colours[defect_type].view(1, -1, 1, 1) + (1 - masks) * goods01

    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        if defect_type not in self.colours:
            raise InputError(f"toy: no colour for defect type '{defect_type}'")
        picked = torch.randint(self.goods.shape[0], (n,), generator=rng, device=rng.device).to(self.device)
        goods = self.goods[picked]
        h, w = goods.shape[-2:]
        side = max(2, h // 4)
        ys = torch.randint(h - side, (n,), generator=rng, device=rng.device).tolist()
        xs = torch.randint(w - side, (n,), generator=rng, device=rng.device).tolist()
        masks = torch.zeros((n, 1, h, w), device=self.device)
        for i, (y, x) in enumerate(zip(ys, xs)):
            masks[i, :, y:y + side, x:x + side] = 1
        labels = torch.full((n,), self.defect_types.index(defect_type), dtype=torch.long, device=self.device)
        return SyntheticBatch(self.paint(goods, masks, defect_type, rng), masks, labels, goods)


def mean_defect_colour(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    pixels = images.float().div(255).permute(1, 0, 2, 3)[:, masks[:, 0]]
    return pixels.mean(dim=1)


def stamp_spec() -> GeneratorSpec:
    def build(request: BuildRequest) -> Stamper:
        colours = {t: mean_defect_colour(s.images, s.masks) for t, s in request.base_sets().items()}
        goods = request.data.train_good
        return Stamper(colours, goods.images, goods.names, request.device)

    return GeneratorSpec("toy-stamp", "a square of the base defects' mean colour", build)


def colour_file(defect: str) -> str:
    return f"colour_{defect}.pt"


def train_colour(job: TrainJob) -> Path:
    cache = job.cache
    steps = int(cache.plan.settings["steps"])
    subset = cache.data.defects[job.defect].select(job.names)
    target = mean_defect_colour(subset.images, subset.masks)
    path = job.out / colour_file(job.defect)
    colour, step = torch.zeros_like(target), 0
    if job.resume:
        state = read_checkpoint(path)
        colour, step = state["colour"], int(state["step"])
    while step < steps:
        colour = colour + 0.5 * (target - colour)
        step += 1
        STEPS_TRAINED.append((job.defect, step))
        save_checkpoint({"kind": KIND, "defect_type": job.defect, "colour": colour, "step": step,
                         "resolution": int(cache.plan.size[0]), **job.extra}, path)
    return path


def colour_spec() -> GeneratorSpec:
    def plan(data, options: dict, device: str) -> Plan:
        steps = options.get("steps") if options.get("steps") is not None else 3
        side = int(data.size[0])
        return Plan({"name": "toy-colour-v1"}, (side, side), side, trained_with={"steps": steps},
                     settings={"steps": steps})

    def colours(checkpoints: dict[str, Path]) -> dict[str, torch.Tensor]:
        return {t: read_checkpoint(p)["colour"] for t, p in checkpoints.items()}

    def build(request: BuildRequest) -> Stamper:
        goods = request.data_for("toy-colour").train_good
        return Stamper(colours(request.checkpoints("toy-colour")), goods.images, goods.names, request.device)

    def load(checkpoints, goods, device, options) -> Stamper:
        return Stamper(colours(checkpoints), goods.images, goods.names, device)

    return GeneratorSpec(
        "toy-colour", "one learned colour per defect type, stamped as a square", build,
        options=(Option("steps", "--toy-steps", int, help="toy-colour: training steps per defect type"),),
        learned=Learned(kind=KIND, folder="toy-colour", noun="toy colour generators", title="toy-colour",
                        plan=plan, checkpoint_file=colour_file, train=train_colour, load=load,
                        size_of=lambda state: (int(state["resolution"]), int(state["resolution"])),
                        needs_goods=True))


@pytest.fixture(scope="module", autouse=True)
def toy_generators():
    specs = [register_generator(stamp_spec), register_generator(colour_spec)]
    yield specs
    for spec in specs:
        unregister_generator(spec.name)


@pytest.fixture(scope="module")
def presets(tiny_config, fast_presets):
    """The tests' tiny presets, with fewer bootstrap resamples: the paired tests still run, on less work."""
    return {"classify": tiny_config, **fast_presets}


def task_options(task: str, toy_root, presets, out: Path, **more) -> dict:
    return {"data": str(toy_root), "category": "toy", "config": presets[task], "aug": ["toy-stamp", "toy-colour"],
            "partitions": [1], "steps": 2, "batch_size": 8, "resolution": 32, "quiet": True, "out": str(out), **more}


def task_argv(task: str, toy_root, presets, out: Path, *extra) -> list[str]:
    argv = [task]
    for key, value in task_options(task, toy_root, presets, out).items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return [*argv, *extra]


@pytest.mark.parametrize("task,entry", [("classify", "cli"), ("segment", "cli"), ("detect", "cli"),
                                        ("classify", "api")])
def test_both_generators_train_every_task(toy_root, presets, tmp_path, task, entry, capsys):
    out = tmp_path / "run"
    STEPS_TRAINED.clear()
    if entry == "cli":
        assert main(task_argv(task, toy_root, presets, out, "--toy-steps", "2")) == 0
        results = json.loads((out / "results.json").read_text())
    else:
        run = getattr(inspect_train, task)(**task_options(task, toy_root, presets, out, toy_steps=2))
        assert run.out == out
        results = run.results
        assert results == json.loads((out / "results.json").read_text())
    assert results["arms"] == ["none", "toy-stamp", "toy-colour"]
    part = results["partitions"][0]
    assert set(part["arms"]) == {"none", "toy-stamp", "toy-colour"} and set(part["tests"]) == {"toy-stamp",
                                                                                             "toy-colour"}
    for arm in ("toy-stamp", "toy-colour"):
        assert part["runs"][arm]["synthetic_samples_seen"] == 2 * 4  # half of each batch of 8, for 2 steps
    # The learned one was trained here by the generic cache: one checkpoint per defect type, 2 steps each.
    index = json.loads((out / "generators" / "toy-colour" / "index.json").read_text())
    assert index["generator"] == "toy-colour" and index["config"] == "toy-colour-v1"
    manifest = json.loads((out / "manifest.json").read_text())["partitions"][0]["defects"]
    assert set(index["defects"]["p1"]) == set(manifest)
    for defect, entry_ in index["defects"]["p1"].items():
        assert entry_["base"] == sorted(manifest[defect]["base"]) and entry_["steps"] == 2
        assert read_checkpoint(out / "generators" / "toy-colour" / entry_["checkpoint"])["step"] == 2
    assert sorted(STEPS_TRAINED) == sorted((d, s) for d in manifest for s in (1, 2))
    config = (out / "config.yaml").read_text()
    assert "toy-colour:" in config and "steps: 2" in config  # the flag is recorded under generators.toy-colour
    # What ships carries no path of this machine: the model file and the generator checkpoints.
    from inspect_train.models.checkpoint import read_model_file

    record = read_model_file(out / "P1" / "toy-colour" / "model.pt")
    assert str(tmp_path) not in json.dumps({k: v for k, v in record.items() if k != "state_dict"}, default=str)
    assert record["trained_on"]["manifest"] == "manifest.json" and record["trained_on"]["data"] == toy_root.name
    hole = read_checkpoint(out / "generators" / "toy-colour" / index["defects"]["p1"]["hole"]["checkpoint"])
    assert str(tmp_path) not in json.dumps({k: v for k, v in hole.items() if k != "colour"})


@pytest.mark.parametrize("task", ["segment", "detect"])
def test_the_api_hands_the_runner_what_the_command_line_does(toy_root, presets, tmp_path, task, monkeypatch):
    """segment() and detect() reach the runner with the namespace the command line builds (classify's full run is
    above); the runner is stopped there, the training itself is the command line's test."""
    import argparse

    import inspect_train.tasks.runner as runner
    from inspect_train.cli import build_parser

    handed = []
    monkeypatch.setattr(runner, "run_task", lambda task_, args: handed.append((task_.name, args)) or None)
    out = tmp_path / "run"
    getattr(inspect_train, task)(**task_options(task, toy_root, presets, out, toy_steps=2))
    expected = build_parser().parse_args(task_argv(task, toy_root, presets, out, "--toy-steps", "2"))
    (name, args), = handed
    strip = lambda ns: {k: v for k, v in vars(ns).items() if k != "func"}  # noqa: E731
    assert name == task and isinstance(args, argparse.Namespace) and strip(args) == strip(expected)
    assert args.aug == ["toy-stamp", "toy-colour"] and args.toy_steps == 2


def test_the_learned_generator_is_reused_and_a_stopped_training_continues(toy_root, presets, tmp_path, capsys):
    out = tmp_path / "first"
    STEPS_TRAINED.clear()
    assert main(task_argv("classify", toy_root, presets, out, "--toy-steps", "2", "--no-baseline")) == 0
    gens = out / "generators"
    # A second command with the same folder reuses every generator: nothing is trained.
    STEPS_TRAINED.clear()
    capsys.readouterr()
    assert main(task_argv("classify", toy_root, presets, tmp_path / "again", "--toy-steps", "2", "--no-baseline",
                          "--generators", str(gens), "--manifest", str(out / "manifest.json"))) == 0
    assert STEPS_TRAINED == [] and "toy-colour: reusing P1 'hole'" in capsys.readouterr().out
    # Another step count is refused by name (the index records what each was trained with).
    code = main(task_argv("classify", toy_root, presets, tmp_path / "other", "--toy-steps", "3", "--no-baseline",
                          "--generators", str(gens), "--manifest", str(out / "manifest.json")))
    assert code == 2 and "trained with steps 2; this run asks for steps 3" in capsys.readouterr().err
    # A training stopped after its checkpoint was written but before it was recorded continues from its step.
    index_path = gens / "toy-colour" / "index.json"
    index = json.loads(index_path.read_text())
    index["defects"] = {}
    index_path.write_text(json.dumps(index))
    STEPS_TRAINED.clear()
    assert main(task_argv("classify", toy_root, presets, tmp_path / "more", "--toy-steps", "4", "--no-baseline",
                          "--generators", str(gens), "--manifest", str(out / "manifest.json"))) == 0
    said = capsys.readouterr().out
    assert "continuing the stopped run's checkpoint" in said
    assert sorted(STEPS_TRAINED) == sorted((d, s) for d in ("hole", "scratch", "stain") for s in (3, 4))
    state = read_checkpoint(gens / "toy-colour" / "p1" / "hole" / colour_file("hole"))
    assert state["step"] == 4


@pytest.fixture(scope="module")
def trained_folder(toy_root, presets, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin") / "run"
    assert main(task_argv("classify", toy_root, presets, out, "--toy-steps", "2", "--no-baseline")) == 0
    return out


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_evaluate_gen_scores_both(toy_root, trained_folder, tmp_path, entry, capsys):
    out = tmp_path / "eval"
    options = {"aug": ["toy-stamp", "toy-colour"], "data": str(toy_root), "category": "toy", "partition": 1,
               "manifest": str(trained_folder / "manifest.json"), "generators": str(trained_folder / "generators"),
               "n": 6, "folds": 2, "repeats": 1, "out": str(out)}
    if entry == "cli":
        argv = ["evaluate-gen", "--aug", "toy-stamp", "toy-colour"]
        for key, value in options.items():
            if key != "aug":
                argv += ["--" + key.replace("_", "-"), str(value)]
        assert main(argv) == 0
        results = json.loads((out / "results.json").read_text())
    else:
        results = inspect_train.evaluate_gen(**options).results
    assert [s["name"] for s in results["sources"]] == ["toy-stamp", "toy-colour"]
    learned = results["sources"][1]
    assert learned["kind"] == "toy-colour" and learned["from"] == str(trained_folder / "generators")
    assert results["resolution"] == [32, 32]  # the learned generator's own size, no --resolution given
    for defect, entry_ in results["defects"].items():
        rows = entry_["rows"]
        assert [r["source"] for r in rows] == ["real base set", "toy-stamp", "toy-colour"]
        assert all(r["n"] == 6 for r in rows[1:]) and (out / entry_["sheet"]).is_file()


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_generate_writes_the_learned_generators_samples(toy_root, trained_folder, tmp_path, entry):
    index = json.loads((trained_folder / "generators" / "toy-colour" / "index.json").read_text())
    checkpoints = [str(trained_folder / "generators" / "toy-colour" / e["checkpoint"])
                   for _, e in sorted(index["defects"]["p1"].items())]
    out = tmp_path / "synth"
    if entry == "cli":
        argv = ["generate", "--n", "3", "--data", str(toy_root), "--category", "toy", "--out", str(out),
                "--format", "coco"]
        for path in checkpoints:
            argv += ["--checkpoint", path]
        assert main(argv) == 0
        meta = json.loads((out / "generate.json").read_text())
    else:
        meta = inspect_train.generate(checkpoint=checkpoints, n=3, data=str(toy_root), category="toy", out=str(out),
                                      format="coco").results
    assert meta["generator"] == "toy-colour" and meta["defect_types"] == ["hole", "scratch", "stain"]
    rows = (out / "index.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 3
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 9 and len(coco["annotations"]) == 9  # one square, one box, per sample


def test_a_foreign_file_is_refused_by_generate_with_what_it_takes(tmp_path, capsys):
    path = save_checkpoint({"kind": "something-else"}, tmp_path / "x.pt")
    assert main(["generate", "--checkpoint", str(path), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a 'something-else' file" in err and KIND in err and len(err.strip().splitlines()) == 1


def test_a_package_outside_the_repository_registers_through_its_entry_point(tmp_path, monkeypatch):
    """An installed package names a module in the `inspect_train.generators` group; the first lookup imports it."""
    from importlib import metadata

    import generators.registry as registry

    (tmp_path / "outside_plugin.py").write_text(
        "from generators.registry import register_generator\n"
        "from generators.spec import GeneratorSpec\n"
        "register_generator(GeneratorSpec('outside', 'declared by another package', lambda request: None))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = metadata.EntryPoint("outside", "outside_plugin", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [entry] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert "outside" in registry.generator_names() and "outside" in registry.aug_names()
        assert "crop-paste" in registry.generator_names()  # the built-in ones stay
    finally:
        unregister_generator("outside")
