"""The settings flow: each setting declared once (a dataclass field with its validator, flag and help), from which
the task flags are built and through which preset, config.yaml and flag values all go.

config.yaml's expected texts below were written by the code before the declarations (FLAG_FIELDS and range checks
in `check()`), from the same presets and flags: a run's config.yaml must not change with the refactor.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from generators.registry import register_generator, unregister_generator
from generators.spec import GeneratorSpec, Option
from inspect_train.cli import build_parser, main
from inspect_train.errors import InputError
from inspect_train.settings import (ClassifySettings, DetectSettings, SegmentSettings, TaskSettings, declarations,
                                    positive_int, resolve_settings, write_config)

CLASSES = {"classify": ClassifySettings, "segment": SegmentSettings, "detect": DetectSettings}


def parse(task: str, *flags: str) -> argparse.Namespace:
    return build_parser(only=task).parse_args([task, *flags])


def resolve(task: str, preset_text: str, tmp_path, *flags: str):
    preset = tmp_path / f"{task}-preset.yaml"
    preset.write_text(preset_text)
    return resolve_settings(CLASSES[task], task, str(preset), parse(task, *flags))


@pytest.mark.parametrize("task, flags, message", [
    ("classify", ["--steps", "0"], "--steps must be a positive integer (got 0)"),
    ("classify", ["--synthetic-ratio", "2"], "--synthetic-ratio must be between 0 and 1 (got 2)"),
    ("classify", ["--lr", "-1"], "--lr must be positive (got -1)"),
    ("classify", ["--threads", "0"], "--threads must be a positive integer (got 0)"),
    ("classify", ["--batch-size", "1.5"], "--batch-size must be a positive integer (got 1.5)"),
    ("classify", ["--partitions", "1", "0"], "--partitions must be a positive integer (got 0)"),
    ("classify", ["--epochs", "0"], "--epochs must be positive (got 0)"),
    ("segment", ["--steps", "x"], "--steps must be a positive integer (got x)"),
    ("detect", ["--box-join", "-1"], "--box-join must be 0 or a positive integer (got -1)"),
])
def test_bad_flag_value_is_refused_by_argparse_in_one_line(capsys, task, flags, message):
    code = main([task, *flags])
    err = capsys.readouterr().err
    assert code == 2 and err == f"inspect-train {task}: error: {message}\n"


def test_bad_flag_from_the_shell_is_one_line_without_traceback():
    done = subprocess.run([sys.executable, "-m", "inspect_train", "classify", "--synthetic-ratio", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["inspect-train classify: error: --synthetic-ratio must be between 0 "
                                                "and 1 (got 2)"]


@pytest.mark.parametrize("task, line, message", [
    ("classify", "steps: 0", "steps must be a positive integer (got 0)"),
    ("classify", "synthetic_ratio: 1.5", "synthetic_ratio must be between 0 and 1 (got 1.5)"),
    ("classify", "lr: -0.1", "lr must be positive (got -0.1)"),
    ("classify", "eval_batch_size: true", "eval_batch_size must be a positive integer (got True)"),
    ("segment", "cpu_threads: 0", "cpu_threads must be a positive integer (got 0)"),
    ("segment", "bootstrap_resamples: null", "bootstrap_resamples must be a positive integer (got None)"),
    ("detect", "recall_fpr: 1.0", "recall_fpr must be between 0 and 1, exclusive (got 1.0)"),
    ("detect", "box_join: -2", "box_join must be 0 or a positive integer (got -2)"),
])
def test_bad_preset_value_is_one_line_naming_the_key_and_the_file(tmp_path, task, line, message):
    with pytest.raises(InputError) as refused:
        resolve(task, f"model: m\n{line}\n", tmp_path)
    assert str(refused.value) == f"{tmp_path / f'{task}-preset.yaml'}: {message}"


def test_bad_preset_value_exits_2_in_one_line(tmp_path, capsys):
    preset = tmp_path / "bad.yaml"
    preset.write_text("steps: 0\n")
    assert main(["segment", "--config", str(preset), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == f"inspect-train: error: {preset}: steps must be a positive integer (got 0)\n"


def test_a_null_passes_where_the_default_is_null(tmp_path):
    assert resolve("segment", "cpu_threads: null\nweights: null\n", tmp_path).cpu_threads is None


# Every flag that set a setting before the declarations (then FLAG_FIELDS, --with-good and --encoder by hand):
# flag -> (the field it sets, the text given, the value the field gets).
OLD_FLAGS = {
    "--model": ("model", "m2", "m2"),
    "--weights": ("weights", "w.pt", "w.pt"),
    "--steps": ("steps", "7", 7),
    "--batch-size": ("batch_size", "5", 5),
    "--synthetic-ratio": ("synthetic_ratio", "1", 1.0),
    "--lr": ("lr", "0.02", 0.02),
    "--resolution": ("resolution", "48", "48"),
    "--threads": ("cpu_threads", "3", 3),
}
# The flags declared since, with the steering.
NEW_FLAGS = {
    "--steer-temperature": ("steer_temperature", "0.25", 0.25),
    "--steer-floor": ("steer_floor", "0.5", 0.5),
    "--steer-candidates": ("steer_candidates", "4", 4),
}
TASK_FLAGS = {"classify": {"--with-good": ("with_good", None, True)},
              "segment": {"--encoder": ("models", "resnet50", {"m": {"depth": 3, "encoder": "resnet50"}})},
              "detect": {"--encoder": ("models", "resnet50", {"m": {"depth": 3, "encoder": "resnet50"}}),
                         "--box-join": ("box_join", "2", 2)}}


@pytest.mark.parametrize("task", list(CLASSES))
def test_every_old_flag_sets_the_same_field(tmp_path, task):
    preset = "model: m\nmodels: {m: {depth: 3}}\n" if task != "classify" else "model: m\n"
    plain = vars(resolve(task, preset, tmp_path))
    flags = {**OLD_FLAGS, **NEW_FLAGS, **TASK_FLAGS[task]}
    for flag, (name, text, value) in flags.items():
        given = vars(resolve(task, preset, tmp_path, flag, *([text] if text is not None else [])))
        assert given == {**plain, name: value}, flag
        assert type(given[name]) is type(value), flag
    declared = {s.flag for s in declarations(CLASSES[task]).values() if s.flag}
    assert declared == set(flags)  # no flag lost, none added
    assert {o for a in build_parser(only=task)._subparsers._group_actions[0].choices[task]._actions
            for o in a.option_strings} >= declared


def test_a_subclass_default_keeps_the_declaration():
    """SegmentSettings gives `model` and `eval_batch_size` other defaults with plain annotations."""
    base, segment = declarations(TaskSettings), declarations(SegmentSettings)
    assert segment["model"] is base["model"] and segment["eval_batch_size"].check is positive_int
    assert SegmentSettings().model == "unet" and SegmentSettings().eval_batch_size == 32


def test_a_hand_made_namespace_goes_through_the_same_check(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("steps: 3\n")
    with pytest.raises(InputError, match=r"^--steps must be a positive integer \(got 0\)$"):
        resolve_settings(ClassifySettings, "classify", str(preset), argparse.Namespace(steps="0"))
    assert resolve_settings(ClassifySettings, "classify", str(preset), argparse.Namespace(steps="4")).steps == 4


def test_a_generator_option_shares_the_validators(tmp_path, capsys):
    spec = GeneratorSpec("check-demo", "a spec whose option is checked", build=lambda request: None,
                         options=(Option("count", "--demo-count", positive_int, help="a positive count"),))
    register_generator(spec)
    try:
        assert main(["classify", "--demo-count", "0"]) == 2
        err = capsys.readouterr().err
        assert err == "inspect-train classify: error: --demo-count must be a positive integer (got 0)\n"
        with pytest.raises(InputError, match=r"generators\.check-demo\.count must be a positive integer \(got -1\)"):
            resolve("classify", "generators:\n  check-demo: {count: -1}\n", tmp_path)
        settings = resolve("classify", "generators:\n  check-demo: {count: 2}\n", tmp_path, "--demo-count", "5")
        assert settings.generators["check-demo"] == {"count": 5}
    finally:
        unregister_generator("check-demo")


CONFIG_CASES = {
    "classify": ("resolution: 32\nmodel: resnet18\nlr: 1\nsteps: 5\ncpu_threads: null\n"
                 "generators:\n  perlin: {texture: self}\n",
                 ["--steps", "7", "--synthetic-ratio", "1", "--threads", "2", "--with-good",
                  "--gan-config", "dfmgan-64"]),
    "segment": ("resolution: 320x128\nsmooth_sigma: 2\nmodels:\n  unet: {encoder: resnet18, encoder_depth: 3}\n",
                ["--model", "unet", "--encoder", "resnet50", "--lr", "0.01", "--resolution", "64",
                 "--inpaint-steps", "4"]),
    "detect": ("recall_fpr: 0.1\nmodels:\n  fcos: {encoder: resnet18, levels: [1, 2, 3]}\n",
               ["--box-join", "0", "--batch-size", "4", "--weights", "pretrained", "--encoder", "resnet34"]),
}
CONFIG_YAML = {
    "classify": """\
resolution: 32
model: resnet18
weights: null
steps: 7
batch_size: 32
lr: 1
weight_decay: 0.0001
warmup_steps: 0
synthetic_ratio: 1.0
real_sampling: balanced
augment_real: false
eval_batch_size: 64
log_every: 10
grid_every: 250
save_models: true
cpu_threads: 2
bootstrap_resamples: 1000
generators:
  perlin:
    texture: self
  dfmgan:
    config: dfmgan-64
steer_temperature: 0.5
steer_floor: 0.3
steer_candidates: 2
steer_momentum: 0.9
with_good: true
run:
  preset: PRESET
""",
    "segment": """\
resolution: '64'
model: unet
weights: null
steps: 1000
batch_size: 32
lr: 0.01
weight_decay: 0.0001
warmup_steps: 0
synthetic_ratio: 0.5
real_sampling: balanced
augment_real: false
eval_batch_size: 32
log_every: 10
grid_every: 250
save_models: true
cpu_threads: null
bootstrap_resamples: 1000
generators:
  inpaint:
    steps: 4
steer_temperature: 0.5
steer_floor: 0.3
steer_candidates: 2
steer_momentum: 0.9
smooth_sigma: 2
loss:
  bce_weight: 1.0
  dice_weight: 1.0
models:
  unet:
    encoder: resnet50
    encoder_depth: 3
run:
  preset: PRESET
""",
    "detect": """\
resolution: null
model: fcos
weights: pretrained
steps: 1000
batch_size: 4
lr: 0.001
weight_decay: 0.0001
warmup_steps: 0
synthetic_ratio: 0.5
real_sampling: balanced
augment_real: false
eval_batch_size: 32
log_every: 10
grid_every: 250
save_models: true
cpu_threads: null
bootstrap_resamples: 1000
generators: {}
steer_temperature: 0.5
steer_floor: 0.3
steer_candidates: 2
steer_momentum: 0.9
recall_fpr: 0.1
box_join: 0
models:
  fcos:
    encoder: resnet34
    levels:
    - 1
    - 2
    - 3
run:
  preset: PRESET
""",
}


@pytest.mark.parametrize("task", list(CONFIG_CASES))
def test_config_yaml_is_written_as_before(tmp_path, task):
    preset, flags = CONFIG_CASES[task]
    path = write_config(resolve(task, preset, tmp_path, *flags), tmp_path / "config.yaml", {"preset": "PRESET"})
    assert path.read_text() == CONFIG_YAML[task]


@pytest.mark.parametrize("argv, line", [
    (["generate", "--checkpoint", "x.pt", "--out", "o", "--n", "0"], "--n must be a positive integer (got 0)"),
    (["generate", "--checkpoint", "x.pt", "--out", "o", "--threads", "0"],
     "--threads must be a positive integer (got 0)"),
    (["evaluate-gen", "--aug", "crop-paste", "--folds", "1"], "--folds must be at least 2 (got 1)"),
    (["evaluate-gen", "--aug", "crop-paste", "--max-per-cluster", "1"],
     "--max-per-cluster must be 0 (no cap) or at least 2 (got 1)"),
    (["predict", "--model", "m.pt", "--images", "i", "--batch-size", "0"],
     "--batch-size must be a positive integer (got 0)"),
    (["gan", "fit-backbone", "--out", "o", "--steps", "-1"], "--steps must be 0 or a positive integer (got -1)"),
    (["gan", "fit-inpaint", "--data", "d", "--category", "c", "--defect", "x", "--out", "o", "--partition", "0"],
     "--partition must be a positive integer (got 0)"),
    (["data", "split", "--data", "d", "--category", "c", "--out", "o.json", "--partitions", "0"],
     "--partitions must be a positive integer (got 0)"),
    (["classify", "--threads", "0"], "--threads must be a positive integer (got 0)"),
])
def test_every_command_refuses_a_bad_number_in_one_line_before_reading_anything(argv, line, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"error: {line}"), err
    assert list(tmp_path.iterdir()) == []
