"""`inspect-train export`: turn a model file into an ONNX or TorchScript graph that runs without inspect-train.

The graph takes float images in [0, 1] shaped (N, C, H, W) at the stored resolution (standardisation is
inside the model) and gives what the model's task exports (`export_graph`, see ShippedTask in
inspect_train.tasks.registry): probabilities, not logits, so a deployment needs no knowledge of our heads
(softmax over the classes for a classifier, the sigmoid defect map (N, 1, H, W) for a segmenter), or a
detector's boxes per image (TorchScript only; the task refuses ONNX with the reason). The classes, resolution,
channels and threshold travel inside the file. The file is written to a staging folder, checked there against
PyTorch by the task, and only then moved to --out, so a failed export or check never leaves a file that looks
finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from inspect_train.commands import COMMANDS
from inspect_train.errors import InputError
from inspect_train.models.checkpoint import load_model, model_task
from inspect_train.output_paths import check_output_file, make_folder
from inspect_train.tasks.exporting import first_line, quiet_jit

FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt"}
INPUT_NAME = "images"


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help=COMMANDS["export"][1])
    p.add_argument("--model", required=True,
                   help="model file of a classify, segment or detect run (OUT/P<k>/<arm>/model.pt)")
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="onnx or torchscript")
    p.add_argument("--out", default=None,
                   help="output file (default: next to the model, model.onnx or model.ts.pt)")
    p.add_argument("--batch-size-dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX: leave the batch size free (default); --no-batch-size-dynamic fixes it at 1. "
                        "A traced TorchScript graph accepts any batch size either way")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the exported graph on a random batch and compare with PyTorch (default on)")
    p.set_defaults(func=run_export)


def default_out(model_path: Path, fmt: str) -> Path:
    """model.pt -> model.onnx / model.ts.pt in the same folder."""
    return model_path.with_suffix(FORMATS[fmt])


def graph_metadata(meta: dict, task) -> dict[str, str]:
    """What a deployment needs to use the graph, each value as JSON text (ONNX metadata holds strings only)."""
    values = {
        "task": meta["task"],
        "architecture": meta["architecture"].get("name"),
        "classes": list(meta["classes"]),
        "resolution": list(meta["resolution"]),
        "channels": int(meta["channels"]),
        "threshold": meta.get("threshold"),
        "input": f"{INPUT_NAME}: float32 (N, C, H, W) in [0, 1]",
        "output": task.output_description,
        "trained_on": meta.get("trained_on") or {},
    }
    return {key: json.dumps(value, default=str) for key, value in values.items()}


def export_onnx(graph, example, path: Path, meta: dict, task, dynamic_batch: bool) -> None:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        program = torch.onnx.export(graph, (example,), None, dynamo=True, dynamic_shapes=shapes,
                                    input_names=[INPUT_NAME], output_names=[task.output_name], verbose=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the user needs its first line
        raise InputError(f"ONNX export of '{meta['architecture'].get('name')}' failed: {first_line(err)}") from None
    for key, value in graph_metadata(meta, task).items():
        program.model.metadata_props[key] = value
    program.save(str(path))


def save_torchscript(compiled, path: Path, meta: dict, task) -> None:
    """The compiled graph with the deployment's metadata as meta.json inside the file."""
    meta_json = json.dumps({k: json.loads(v) for k, v in graph_metadata(meta, task).items()}, indent=1)
    with quiet_jit():
        torch.jit.save(compiled, str(path), _extra_files={"meta.json": meta_json})


def run_export(args) -> int:
    model_path = Path(args.model)
    out = check_output_file(args.out if args.out else default_out(model_path, args.format))
    model, meta = load_model(model_path, "cpu")
    task = model_task(meta, model_path)
    refusal = task.export_refusals.get(args.format)
    if refusal:
        raise InputError(f"{model_path}: {refusal}")
    make_folder(out.parent)

    graph = task.export_graph(model)
    h, w = (int(v) for v in meta["resolution"])
    batch = 2 if args.batch_size_dynamic or args.format == "torchscript" else 1
    rng = torch.Generator().manual_seed(0)
    example = torch.rand((batch, int(meta["channels"]), h, w), generator=rng)

    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        staged = stage / out.name
        if args.format == "onnx":
            export_onnx(graph, example, staged, meta, task, args.batch_size_dynamic)
        else:
            save_torchscript(task.compile_torchscript(graph, example, meta), staged, meta, task)
        if args.check:
            task.check_export(model, graph, staged, args.format, torch.rand(example.shape, generator=rng))
        for item in stage.iterdir():  # the graph, and its external weights file if the exporter wrote one
            item.replace(out.parent / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    shape = f"({'N' if args.batch_size_dynamic or args.format == 'torchscript' else 1}, {meta['channels']}, {h}, {w})"
    print(f"exported {meta['task']} model '{meta['architecture'].get('name')}' as {args.format} to {out} "
          f"(input {INPUT_NAME} {shape} in [0, 1] -> {task.output_name})")
    return 0
