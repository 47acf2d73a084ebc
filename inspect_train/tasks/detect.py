"""The detect task: where is each defect, and which type is it? A torchvision detector (FCOS by default, RetinaNet
or Faster R-CNN) on a timm backbone with a feature pyramid, plugged into the protocol runner
(inspect_train.tasks.runner).

Boxes come from masks (inspect_train.boxes): one per 8-connected component (or group of pieces, --box-join),
labelled with the image's defect type, computed on the fly for the real base images, every fresh synthetic sample
and the test images. Every arm trains on the base set's real defects, train/good (no boxes: it teaches what is not
a defect) and (generator arms) fresh synthetic defects every batch; the test set is the partition's test defects
plus all of test/good, as for segment. Scores (inspect_train.metrics.detection): COCO mAP@0.5 and mAP@0.5:0.95,
each type's AP at both, image AUROC and image-level defect recall at a fixed false-positive rate on test/good (an
image's score is its best box). The box score threshold stored with each model (what `predict` keeps) is the
box-F1-best threshold at IoU 0.5 on its TRAINING images.

Per arm, besides predictions.csv: ground_truth.json (the test set as a COCO data set: images, boxes, categories)
and detections.json (every box in COCO's results format, image ids into ground_truth.json).

Shipped (predict, export): per image the boxes at or above the stored box-score threshold (or --threshold) with
an overlay, and every box found in detections.json (COCO style: images, categories, and the boxes as
annotations with a score). Exported as TorchScript only, compiled with torch.jit.script (the number of boxes
depends on the image, which a trace cannot follow), giving per image {"boxes", "scores", "labels"}; ONNX is
refused with the reason.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torchvision.utils import draw_bounding_boxes, make_grid

from inspect_train.boxes import box_targets
from inspect_train.errors import InputError
from inspect_train.metrics.detection import (RECALL_POINTS, box_f1_threshold, detection_intervals, detection_metrics,
                                             flagged, image_scores, recall_key)
from inspect_train.metrics.paired import mcnemar_exact
from inspect_train.models.detectors import ScriptedDetector, check_detector_args, detector_config
from inspect_train.models.registry import DETECTORS, architecture, create_detector
from inspect_train.online import GOOD
from inspect_train.settings import DetectSettings
from inspect_train.tasks.exporting import TOLERANCE, first_line, quiet_jit
from inspect_train.tasks.prediction import stored_threshold
from inspect_train.tasks.runner import Evaluation, TestSet

GRID_IMAGES = 8
TRUE_COLOUR, FOUND_COLOUR = "lime", "red"
NO_ONNX = ("a detector cannot be exported as ONNX here: torch.export cannot follow torchvision's box "
           "post-processing (non-maximum suppression, a number of boxes that depends on the image); use --format "
           "torchscript, or `inspect-train predict`")


@dataclass
class Detections:
    """One arm's outputs on the test set: per image its boxes, scores and labels, the true boxes, image scores."""

    boxes: list[dict]
    truths: list[dict]
    scores: np.ndarray
    pr_curves: dict = field(default_factory=dict)  # defect type -> precision at 101 recall points (IoU 0.5)


@torch.no_grad()
def predict_boxes(model, images: torch.Tensor, device, batch_size: int) -> list[dict]:
    """Per image {"boxes", "scores", "labels"} on the CPU, from uint8 images (N, C, H, W)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].to(device).float().div_(255.0)
        for found in model(chunk):
            out.append({k: v.detach().float().cpu() if k != "labels" else v.detach().cpu()
                        for k, v in found.items()})
    return out


@torch.no_grad()
def image_losses(net: nn.Module, images: torch.Tensor, targets: list[dict]) -> torch.Tensor:
    """Each image's detector loss (the sum of its terms), from one no-grad training-mode forward per image:
    torchvision's detectors only give the batch's loss. Batch norm stays in eval mode, so the pass moves no
    statistics, and every module's mode is restored after."""
    modes = [(module, module.training) for module in net.modules()]
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        return torch.stack([sum(net(images[i:i + 1], [targets[i]]).values()) for i in range(len(images))])
    finally:
        for module, mode in modes:
            module.train(mode)


def _step(net, batch, join: int = 0):
    targets = box_targets(batch.masks, batch.labels, join=join)
    terms = net(batch.images, targets)
    loss = sum(terms.values())
    # Steering's per-image losses cost a pass of their own: computed only when a steered arm reads them.
    return loss, {k: v.detach() for k, v in terms.items()}, lambda: image_losses(net, batch.images, targets)


def box_text(found: dict, classes: list[str], threshold: float) -> str:
    """The boxes kept at `threshold` as 'type score x0 y0 x1 y1' joined by '; ' (best first)."""
    keep = found["scores"] >= threshold
    parts = []
    for box, score, label in zip(found["boxes"][keep].tolist(), found["scores"][keep].tolist(),
                                 found["labels"][keep].tolist()):
        parts.append(f"{classes[int(label)]} {score:.4f} " + " ".join(f"{v:.1f}" for v in box))
    return "; ".join(parts)


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, colour: str) -> torch.Tensor:
    """uint8 (3, H, W) picture of a [0, 1] or uint8 image with the boxes outlined."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if not len(boxes):
        return image.contiguous()
    return draw_bounding_boxes(image.contiguous(), boxes.reshape(-1, 4), colors=colour, width=1)


def coco_files(tests: TestSet, outputs: Detections) -> tuple[dict, list[dict]]:
    """(the test set as a COCO data set, the detections in COCO's results format); boxes as [x, y, w, h]."""
    defects = tests.classes[:-1]
    h, w = tests.images.shape[-2:]
    images = [{"id": i, "file_name": name, "width": int(w), "height": int(h)} for i, name in enumerate(tests.names)]
    annotations, results = [], []
    for i, (truth, found) in enumerate(zip(outputs.truths, outputs.boxes)):
        for (x0, y0, x1, y1), label in zip(truth["boxes"].tolist(), truth["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        for (x0, y0, x1, y1), label, score in zip(found["boxes"].tolist(), found["labels"].tolist(),
                                                  found["scores"].tolist()):
            results.append({"image_id": i, "category_id": int(label),
                            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                            "score": round(float(score), 6)})
    categories = [{"id": k, "name": name} for k, name in enumerate(defects)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def write_detections(path: Path, files: list[Path], found: list[dict], classes: list[str],
                     resolution: tuple[int, int], meta: dict) -> None:
    """predict: every box the detector found, COCO style: the images (at the model's resolution, where the boxes
    are), the defect types as categories, and the boxes as annotations with their score."""
    h, w = resolution
    annotations = []
    for i, boxes in enumerate(found):
        for (x0, y0, x1, y1), label, score in zip(boxes["boxes"].tolist(), boxes["labels"].tolist(),
                                                  boxes["scores"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                "area": round((x1 - x0) * (y1 - y0), 2), "score": round(float(score), 6)})
    record = {"info": {"model": meta.get("architecture", {}).get("name"), "resolution": [h, w],
                       "note": "boxes in pixels of the image resized to the model's resolution"},
              "images": [{"id": i, "file_name": str(p), "width": w, "height": h} for i, p in enumerate(files)],
              "categories": [{"id": k, "name": name} for k, name in enumerate(classes) if name != GOOD],
              "annotations": annotations}
    path.write_text(json.dumps(record))


class BoxPrediction:
    """predict: each image's best box score and the boxes kept at the threshold, an overlay of them, and every
    box found in detections.json."""

    header = ["file", "image_score", "boxes_kept", "predicted", "threshold", "boxes"]
    folders = ("overlays",)
    written = " with overlays/ and detections.json"

    def __init__(self, threshold: float, meta: dict):
        self.threshold, self.meta = threshold, meta
        self.classes = [str(c) for c in meta["classes"]]
        self.found: list[dict] = []

    def batch(self, model, images, x, files: list[Path], stems: list[str], stage: Path) -> list[list]:
        rows = []
        for i, (path, stem, found) in enumerate(zip(files, stems, model(x))):
            found = {k: v.detach().cpu() for k, v in found.items()}
            self.found.append(found)
            keep = found["scores"] >= self.threshold
            best = float(found["scores"].max()) if len(found["scores"]) else 0.0
            kept = int(keep.sum())
            rows.append([str(path), f"{best:.8g}", kept, "defect" if kept else GOOD, f"{self.threshold:.8g}",
                         box_text(found, self.classes, self.threshold)])
            plain = draw_boxes(images[i], found["boxes"][:0], FOUND_COLOUR)
            boxed = draw_boxes(images[i], found["boxes"][keep], FOUND_COLOUR)
            panel = torch.cat([plain, boxed], dim=2)  # image | the boxes kept
            Image.fromarray(panel.permute(1, 2, 0).numpy()).save(stage / "overlays" / f"{stem}.png")
        return rows

    def finish(self, stage: Path, files: list[Path]) -> None:
        resolution = (int(self.meta["resolution"][0]), int(self.meta["resolution"][1]))
        write_detections(stage / "detections.json", files, self.found, self.classes, resolution, self.meta)


class DetectTask:
    name = "detect"
    settings_class = DetectSettings
    toy_preset, data_preset = "detect-tiny", "detect-256"
    headline = "map_50"
    find_unused_parameters = False
    output_name = "detections"
    output_description = ("detections: per image {boxes (M, 4) x0 y0 x1 y1 in pixels, scores (M,), labels (M,) "
                          "class indices}")
    export_refusals = {"onnx": NO_ONNX}
    saved_types = (Detections,)  # what a finished arm's outputs hold besides tensors and arrays (--resume reads it)

    def summary_metrics(self, settings: DetectSettings) -> list[str]:
        return ["map_50", "map_50_95", recall_key(settings.recall_fpr), "image_auroc"]

    def check_settings(self, settings: DetectSettings) -> None:
        if settings.model not in DETECTORS:
            raise InputError(f"--model '{settings.model}': unknown detector (choose from {', '.join(DETECTORS)})")
        config = detector_config(settings.model_config())
        check_detector_args(settings.model, config["encoder"], settings.weights)

    def class_names(self, settings, defect_types: list[str]) -> list[str]:
        if GOOD in defect_types:
            raise InputError(f"a defect type is called '{GOOD}'; it clashes with the defect-free images")
        return [*sorted(defect_types), GOOD]  # train/good trains (no boxes); test/good is always tested

    def check_data(self, settings, data) -> None:
        return None  # any size: the detector pads each batch to its pyramid's stride

    def build_model(self, settings: DetectSettings, data, classes: list[str]):
        return create_detector(settings.model, data.channels, len(classes) - 1, data.size, settings.model_config(),
                               settings.weights)

    def architecture(self, settings: DetectSettings, data, classes: list[str]) -> dict:
        return architecture("detect", settings.model, data.channels, num_classes=len(classes) - 1,
                            config=detector_config(settings.model_config()), size=data.size)

    def build_from_architecture(self, record: dict):
        return create_detector(record["name"], record["in_chans"], record["num_classes"], tuple(record["size"]),
                               record.get("config"))

    def learning_rate(self, settings: DetectSettings) -> float:
        return float(settings.model_config().get("lr", settings.lr))

    def paired_good(self, settings) -> bool:
        return False

    def step_fn(self, settings, device):
        return functools.partial(_step, join=int(settings.box_join))

    def sample_losses(self, model, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, settings):
        """Steering's hardness of candidate samples: each one's detector loss under the current model."""
        return image_losses(model, images, box_targets(masks, labels, join=int(settings.box_join)))

    def evaluate(self, model, tests: TestSet, settings: DetectSettings, device) -> Evaluation:
        found = predict_boxes(model, tests.images, device, settings.eval_batch_size)
        truths = box_targets(tests.masks, tests.labels, device="cpu", join=int(settings.box_join))
        is_defect = (tests.labels != tests.classes.index(GOOD)).numpy()
        metrics = detection_metrics(found, truths, is_defect, tests.classes[:-1], float(settings.recall_fpr))
        curves = metrics.pop("pr_curves_50", {})
        rounded = {}
        for key, value in metrics.items():
            if isinstance(value, dict):
                rounded[key] = {k: None if v is None else round(float(v), 6) for k, v in value.items()}
            else:
                rounded[key] = None if value is None else round(float(value), 6)
        return Evaluation(rounded, Detections(found, truths, image_scores(found), curves))

    def log_evaluation(self, writer, tests: TestSet, evaluation: Evaluation, settings: DetectSettings) -> None:
        """Metrics, the image-level PR curve, each type's box PR curve at IoU 0.5, and a grid of test images:
        true boxes (green) beside the boxes found above the image threshold at the fixed FPR (red)."""
        metrics, outputs, step = evaluation.metrics, evaluation.outputs, settings.steps
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"test/{key}", value, step)
            elif isinstance(value, dict):
                for name, v in value.items():
                    if v is not None:
                        writer.add_scalar(f"test/{key}/{name}", v, step)
        good = tests.classes.index(GOOD)
        is_defect = tests.labels != good
        if is_defect.any() and not is_defect.all():
            writer.add_pr_curve("test/image_pr", is_defect, torch.from_numpy(outputs.scores).clamp(0, 1), step,
                                num_thresholds=201)
        for k, name in enumerate(tests.classes[:-1]):
            curve = outputs.pr_curves.get(name)
            n_true = sum(int((t["labels"] == k).sum()) for t in outputs.truths)
            if curve is None or n_true == 0:
                continue
            precision = np.asarray(curve, dtype=np.float64)[::-1]  # high recall (low threshold) first
            recall = RECALL_POINTS[::-1]
            tp = recall * n_true
            fp = np.divide(tp, precision, out=np.zeros_like(tp), where=precision > 0) - tp
            writer.add_pr_curve_raw(f"test/box_pr_iou50/{name}", tp, fp, np.zeros_like(tp), n_true - tp, precision,
                                    recall, step, num_thresholds=len(recall))
        threshold = metrics.get("image_threshold_at_fpr")
        threshold = 0.0 if threshold is None else threshold
        picks = list(range(min(GRID_IMAGES, tests.n_defect)))
        picks += list(range(tests.n_defect, min(len(tests.names), tests.n_defect + 2)))  # and two good images
        if not picks:
            return
        tiles = []
        for i in picks:
            found = outputs.boxes[i]
            keep = found["scores"] > threshold
            tiles += [draw_boxes(tests.images[i], outputs.truths[i]["boxes"], TRUE_COLOUR),
                      draw_boxes(tests.images[i], found["boxes"][keep], FOUND_COLOUR)]
        writer.add_image("test/true_boxes|found_boxes", make_grid(torch.stack(tiles), nrow=2, padding=2, pad_value=128),
                         step)

    def prediction_rows(self, tests: TestSet, evaluation: Evaluation, threshold: dict | None,
                        settings: DetectSettings) -> list[dict]:
        outputs, metrics = evaluation.outputs, evaluation.metrics
        at_fpr = flagged(outputs.scores, metrics.get("image_threshold_at_fpr"))
        score = None if threshold is None else float(threshold["score"])
        defects = tests.classes[:-1]
        rows = []
        for i, name in enumerate(tests.names):
            found = outputs.boxes[i]
            row = {"file": name, "true_class": tests.classes[int(tests.labels[i])],
                   "true_boxes": len(outputs.truths[i]["boxes"]), "image_score": round(float(outputs.scores[i]), 6),
                   "flagged_at_fpr": int(at_fpr[i])}
            if score is not None:
                kept = int((found["scores"] >= score).sum())
                row.update({"boxes_kept": kept, "predicted": "defect" if kept else GOOD, "threshold": round(score, 6),
                            "boxes": box_text(found, defects, score)})
            rows.append(row)
        return rows

    def write_outputs(self, folder: Path, tests: TestSet, evaluation: Evaluation, threshold, settings) -> None:
        """ground_truth.json and detections.json (COCO formats) beside predictions.csv."""
        truth, results = coco_files(tests, evaluation.outputs)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ground_truth.json").write_text(json.dumps(truth))
        (folder / "detections.json").write_text(json.dumps(results))

    def paired_tests(self, tests: TestSet, baseline: Evaluation, arm: Evaluation, settings: DetectSettings,
                     seed: int) -> dict:
        """Paired bootstrap of the mAP and image-AUROC differences; exact McNemar on the image-level decisions at
        the fixed FPR (each model at its own threshold)."""
        is_defect = (tests.labels != tests.classes.index(GOOD)).numpy()
        keys = ("map_50", "map_50_95", "image_auroc")
        exact = {k: (baseline.metrics.get(k), arm.metrics.get(k)) for k in keys}
        tests_out = detection_intervals(baseline.outputs.boxes, arm.outputs.boxes, baseline.outputs.truths, is_defect,
                                        len(tests.classes) - 1, n_resamples=settings.bootstrap_resamples, seed=seed,
                                        exact=exact)

        def right(evaluation):
            return flagged(evaluation.outputs.scores, evaluation.metrics.get("image_threshold_at_fpr")) == is_defect

        tests_out[recall_key(settings.recall_fpr)] = mcnemar_exact(right(baseline), right(arm))
        return tests_out

    def decision_threshold(self, model, pool, settings: DetectSettings, device) -> dict:
        """The box score threshold with the best F1 at IoU 0.5 on the arm's real training images (base-set defects
        + train/good): what predict keeps."""
        found = predict_boxes(model, pool.images, device, settings.eval_batch_size)
        truths = box_targets(pool.masks.float(), pool.labels, device="cpu", join=int(settings.box_join))
        return {"score": box_f1_threshold(found, truths), "iou": 0.5,
                "chosen_on": f"box F1 at IoU 0.5 on the {len(pool)} real training images (base-set defects + "
                             "train/good)"}

    def predictor(self, meta: dict, threshold: float | None) -> BoxPrediction:
        return BoxPrediction(stored_threshold(meta, threshold, "score", "box score"), meta)

    def export_graph(self, model):
        return ScriptedDetector(model).eval()

    def compile_torchscript(self, graph, example, meta: dict):
        """torch.jit.script, not a trace: the number of boxes depends on the image."""
        try:
            with quiet_jit():
                return torch.jit.script(graph)
        except Exception as err:  # noqa: BLE001 - the compiler's error, in one line
            raise InputError(f"TorchScript compilation of detector '{meta['architecture'].get('name')}' failed: "
                             f"{first_line(err)}") from None

    def check_export(self, model, graph, path: Path, fmt: str, images) -> None:
        """The exported detector must find PyTorch's boxes on `images`: the same number and labels, corners and
        scores within TOLERANCE * 100 (corners are in pixels)."""
        with quiet_jit(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*always returns a \(Losses, Detections\) tuple",
                                    category=UserWarning)
            loaded = torch.jit.load(str(path), map_location="cpu")
            with torch.no_grad():
                got, expected = loaded(images), model(images)
        worst = 0.0
        for a, b in zip(got, expected):
            if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
                raise InputError("check failed: the exported detector finds other boxes than PyTorch; nothing written")
            if len(a["boxes"]):
                worst = max(worst, float((a["boxes"] - b["boxes"]).abs().max()),
                            float((a["scores"] - b["scores"]).abs().max()))
        print(f"check: max abs difference to PyTorch (boxes, scores) on a batch of {len(images)}: {worst:.3g}")
        if not worst <= TOLERANCE * 100:
            raise InputError(f"check failed: the exported detector differs from PyTorch by {worst:.3g}; "
                             "nothing written")


TASK = DetectTask()
