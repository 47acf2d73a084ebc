"""`inspect-train export`: turn a model file into an ONNX or TorchScript graph that runs without inspect-train.

The graph takes float images in [0, 1] shaped (N, C, H, W) at the stored resolution (standardisation is
inside the model) and gives probabilities, not logits, so a deployment needs no knowledge of our heads:
softmax over the classes for a classifier, the sigmoid defect map (N, 1, H, W) for a segmenter (for DRAEM
the map only, without its reconstruction). The classes, resolution, channels and threshold travel inside
the file. A detector is exported as TorchScript only, compiled with torch.jit.script (its number of boxes depends
on the image, which a trace cannot follow): it gives per image {"boxes", "scores", "labels"}; ONNX is refused
with the reason (torch.export cannot follow torchvision's data-dependent box post-processing). The file is
written to a staging folder, checked there against PyTorch, and only then moved to --out, so a failed export or
check never leaves a file that looks finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from inspect_train.errors import InputError

FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt"}
TOLERANCE = 1e-4
INPUT_NAME = "images"


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a model file as an ONNX or TorchScript graph giving probabilities "
                                             "(detectors: TorchScript, giving boxes)")
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


def output_name(meta: dict) -> str:
    return {"classify": "probabilities", "detect": "detections"}.get(meta["task"], "defect_map")


def graph_metadata(meta: dict) -> dict[str, str]:
    """What a deployment needs to use the graph, each value as JSON text (ONNX metadata holds strings only)."""
    values = {
        "task": meta["task"],
        "architecture": meta["architecture"].get("name"),
        "classes": list(meta["classes"]),
        "resolution": list(meta["resolution"]),
        "channels": int(meta["channels"]),
        "threshold": meta.get("threshold"),
        "input": f"{INPUT_NAME}: float32 (N, C, H, W) in [0, 1]",
        "output": {"classify": "probabilities: softmax (N, classes)",
                   "detect": "detections: per image {boxes (M, 4) x0 y0 x1 y1 in pixels, scores (M,), labels (M,) "
                             "class indices}"}.get(meta["task"], "defect_map: sigmoid defect probability (N, 1, H, W)"),
        "trained_on": meta.get("trained_on") or {},
    }
    return {key: json.dumps(value, default=str) for key, value in values.items()}


def probability_graph(model, task: str):
    """The model with its head's logits turned into probabilities (DRAEM: only the defect map)."""
    import torch
    from torch import nn

    class Probabilities(nn.Module):
        def __init__(self, net: nn.Module, classify: bool):
            super().__init__()
            self.net = net
            self.classify = classify

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = self.net(images)
            if self.classify:
                return torch.softmax(out, dim=1)
            if isinstance(out, (tuple, list)):
                out = out[-1]
            return torch.sigmoid(out)

    return Probabilities(model, task == "classify").eval()


def export_onnx(graph, example, path: Path, meta: dict, dynamic_batch: bool) -> None:
    import torch

    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        program = torch.onnx.export(graph, (example,), None, dynamo=True, dynamic_shapes=shapes,
                                    input_names=[INPUT_NAME], output_names=[output_name(meta)], verbose=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the user needs its first line
        raise InputError(f"ONNX export of '{meta['architecture'].get('name')}' failed: "
                         f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    for key, value in graph_metadata(meta).items():
        program.model.metadata_props[key] = value
    program.save(str(path))


@contextmanager
def quiet_jit():
    """torch.jit.trace/save/load still work but warn that TorchScript is deprecated; the user chose the format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
        yield


def export_torchscript(graph, example, path: Path, meta: dict) -> None:
    import torch

    try:
        with torch.no_grad(), quiet_jit():
            traced = torch.jit.trace(graph, example, check_trace=False)
    except Exception as err:  # noqa: BLE001 - as for ONNX: one line, not the tracer's traceback
        raise InputError(f"TorchScript trace of '{meta['architecture'].get('name')}' failed: "
                         f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    meta_json = json.dumps({k: json.loads(v) for k, v in graph_metadata(meta).items()}, indent=1)
    with quiet_jit():
        torch.jit.save(traced, str(path), _extra_files={"meta.json": meta_json})


def export_detector(model, example, path: Path, meta: dict, check: bool) -> None:
    """TorchScript of a detector (scripted), checked box for box against PyTorch on `example` unless told not to."""
    import torch

    from inspect_train.models.detectors import ScriptedDetector

    try:
        with quiet_jit():
            scripted = torch.jit.script(ScriptedDetector(model).eval())
    except Exception as err:  # noqa: BLE001 - the compiler's error, in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"TorchScript compilation of detector '{meta['architecture'].get('name')}' failed: "
                         f"{type(err).__name__}: {first}") from None
    meta_json = json.dumps({k: json.loads(v) for k, v in graph_metadata(meta).items()}, indent=1)
    with quiet_jit():
        torch.jit.save(scripted, str(path), _extra_files={"meta.json": meta_json})
    if not check:
        return
    with quiet_jit(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*always returns a \(Losses, Detections\) tuple",
                                category=UserWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            got, expected = loaded(example), model(example)
    worst = 0.0
    for a, b in zip(got, expected):
        if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
            raise InputError("check failed: the exported detector finds other boxes than PyTorch; nothing written")
        if len(a["boxes"]):
            worst = max(worst, float((a["boxes"] - b["boxes"]).abs().max()),
                        float((a["scores"] - b["scores"]).abs().max()))
    print(f"check: max abs difference to PyTorch (boxes, scores) on a batch of {len(example)}: {worst:.3g}")
    if not worst <= TOLERANCE * 100:  # box corners are in pixels
        raise InputError(f"check failed: the exported detector differs from PyTorch by {worst:.3g}; nothing written")


def run_exported(path: Path, fmt: str, images):
    """The exported file's output for `images`, run the way a deployment would run it (CPU)."""
    import numpy as np
    import torch

    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with quiet_jit():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(images).numpy()


def run_export(args) -> int:
    import numpy as np
    import torch

    from inspect_train.models.checkpoint import load_model

    model_path = Path(args.model)
    model, meta = load_model(model_path, "cpu")
    if meta["task"] not in ("classify", "segment", "detect"):
        raise InputError(f"{model_path}: unknown task '{meta['task']}' in the model file")
    if meta["task"] == "detect" and args.format == "onnx":
        raise InputError(f"{model_path}: a detector cannot be exported as ONNX here: torch.export cannot follow "
                         "torchvision's box post-processing (non-maximum suppression, a number of boxes that depends "
                         "on the image); use --format torchscript, or `inspect-train predict`")
    out = Path(args.out) if args.out else default_out(model_path, args.format)
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)

    graph = probability_graph(model, meta["task"])
    h, w = (int(v) for v in meta["resolution"])
    batch = 2 if args.batch_size_dynamic or args.format == "torchscript" else 1
    rng = torch.Generator().manual_seed(0)
    example = torch.rand((batch, int(meta["channels"]), h, w), generator=rng)

    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        staged = stage / out.name
        if meta["task"] == "detect":
            export_detector(model, example, staged, meta, args.check)
        elif args.format == "onnx":
            export_onnx(graph, example, staged, meta, args.batch_size_dynamic)
        else:
            export_torchscript(graph, example, staged, meta)
        if args.check and meta["task"] != "detect":
            images = torch.rand(example.shape, generator=rng)
            with torch.no_grad():
                expected = graph(images).numpy()
            got = run_exported(staged, args.format, images)
            if got.shape != expected.shape:
                raise InputError(f"check failed: the exported graph gives shape {got.shape}, PyTorch {expected.shape}")
            diff = float(np.abs(got - expected).max())
            print(f"check: max abs difference to PyTorch on a batch of {len(images)}: {diff:.3g}")
            if not diff <= TOLERANCE:
                raise InputError(f"check failed: the exported graph differs from PyTorch by {diff:.3g} "
                                 f"(more than {TOLERANCE:g}); nothing written")
        for item in stage.iterdir():  # the graph, and its external weights file if the exporter wrote one
            item.replace(out.parent / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    shape = f"({'N' if args.batch_size_dynamic or args.format == 'torchscript' else 1}, {meta['channels']}, {h}, {w})"
    print(f"exported {meta['task']} model '{meta['architecture'].get('name')}' as {args.format} to {out} "
          f"(input {INPUT_NAME} {shape} in [0, 1] -> {output_name(meta)})")
    return 0
