"""The segment task: where is the defect? A U-Net, DeepLabV3 (segmentation-models-pytorch), DRAEM-style or
DeSTSeg segmenter (each declared once in inspect_train.models.segmenters), plugged into the protocol runner
(inspect_train.tasks.runner).

Every arm trains on the base set's real defects, train/good and (generator arms) fresh synthetic defects
every batch; the test set is the partition's test defects plus all of test/good. Scores: pixel AP/AUROC,
AUPRO up to 30% FPR, image AUROC/AP (image score = max of the smoothed map) and the best pixel F1. The
decision threshold stored with each model is the pixel F1-best threshold on its TRAINING images.

Shipped (predict, export): per image its defect map, the mask at the stored threshold and the image score, with
an overlay (image | heat map | mask outlined); the exported graph gives the sigmoid defect map (N, 1, H, W), for
DRAEM the map only, without its reconstruction.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from scipy import ndimage
from torchvision.utils import make_grid

from inspect_train.errors import InputError
from inspect_train.metrics.paired import segmentation_intervals
from inspect_train.metrics.segmentation import METRIC_KEYS, image_labels, image_scores, segmentation_metrics
from inspect_train.models.registry import SEGMENTERS, architecture, create_segmenter
from inspect_train.models.segmenters import defect_logits, input_divisor, mask_losses, segmenter_spec
from inspect_train.online import GOOD
from inspect_train.settings import SegmentSettings
from inspect_train.tasks.exporting import check_probabilities, trace_torchscript
from inspect_train.tasks.prediction import stored_threshold
from inspect_train.tasks.runner import Evaluation, TestSet

GRID_IMAGES = 8
THRESHOLD_BINS = 1000
HEAT_MAP = "inferno"


@torch.no_grad()
def predict_maps(model: nn.Module, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    """Defect probability maps, float (N, 1, H, W) on the CPU, from uint8 images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        out.append(torch.sigmoid(defect_logits(model(x))).float().cpu())
    return torch.cat(out)


def f1_best_threshold(maps: torch.Tensor, masks: torch.Tensor, bins: int = THRESHOLD_BINS) -> float:
    """The probability threshold with the best pixel F1, from score histograms of defect and good pixels
    (binned so that half a million training images' pixels cost one pass; written here, it is a few lines)."""
    scores = maps.flatten().numpy()
    truth = masks.flatten().numpy().astype(bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    positives = np.histogram(scores[truth], bins=edges)[0][::-1].cumsum()  # pixels >= each lower edge, top down
    negatives = np.histogram(scores[~truth], bins=edges)[0][::-1].cumsum()
    if positives[-1] == 0:
        return 0.5  # no defect pixel to learn a threshold from
    precision = positives / np.maximum(positives + negatives, 1)
    recall = positives / positives[-1]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    best = int(np.argmax(f1))
    return float(edges[::-1][best + 1])


class DefectMap(nn.Module):
    """The exported graph: the sigmoid defect map (N, 1, H, W) of any segmenter (DRAEM: without its
    reconstruction)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(defect_logits(self.net(images)))


def heat_map_colours() -> np.ndarray:
    """(256, 3) uint8 colour table; the map is drawn on a fixed 0..1 scale so images are comparable."""
    from matplotlib import colormaps  # heavy optional dependency: only the heat-map pictures need it

    return (colormaps[HEAT_MAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def overlay_panel(image: np.ndarray, prob: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """image | heat map | image with the mask tinted and outlined in red, side by side (H, 3W, 3) uint8."""
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    heat = colours[np.clip(prob * 255 + 0.5, 0, 255).astype(np.uint8)]
    tinted = rgb.astype(np.float32)
    tinted[mask] = 0.55 * tinted[mask] + 0.45 * np.array([255.0, 0.0, 0.0])
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    tinted[edge] = (255.0, 0.0, 0.0)
    return np.concatenate([rgb, heat, tinted.round().astype(np.uint8)], axis=1)


class MapPrediction:
    """predict: each image's score, its defect pixels at the threshold, an overlay and the mask as a PNG."""

    header = ["file", "image_score", "defect_pixels", "predicted", "threshold"]
    folders = ("overlays", "masks")
    written = " with overlays/ and masks/"

    def __init__(self, threshold: float, sigma: float):
        self.threshold, self.sigma = threshold, sigma
        self.colours = heat_map_colours()

    def batch(self, model, images, x, files: list[Path], stems: list[str], stage: Path) -> list[list]:
        maps = torch.sigmoid(defect_logits(model(x)).float())[:, 0].cpu().numpy()
        scores = image_scores(maps, self.sigma)
        pictures = images.permute(0, 2, 3, 1).numpy()
        rows = []
        for i, (path, stem) in enumerate(zip(files, stems)):
            mask = maps[i] >= self.threshold
            defects = int(mask.sum())
            rows.append([str(path), f"{scores[i]:.8g}", defects, "defect" if defects else "good",
                         f"{self.threshold:.8g}"])
            Image.fromarray(overlay_panel(pictures[i], maps[i], mask, self.colours)).save(
                stage / "overlays" / f"{stem}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(stage / "masks" / f"{stem}_mask.png")
        return rows

    def finish(self, stage: Path, files: list[Path]) -> None:
        return None  # every image's files are written with its batch


class SegmentTask:
    name = "segment"
    settings_class = SegmentSettings
    toy_preset, data_preset = "segment-tiny", "segment-256"
    headline = "pixel_ap"
    find_unused_parameters = True  # an smp encoder cut to fewer stages holds weights no forward uses
    output_name = "defect_map"
    output_description = "defect_map: sigmoid defect probability (N, 1, H, W)"
    export_refusals: dict[str, str] = {}

    def summary_metrics(self, settings) -> list[str]:
        return list(METRIC_KEYS)

    def check_settings(self, settings: SegmentSettings) -> None:
        if settings.model not in SEGMENTERS:
            raise InputError(f"--model '{settings.model}': unknown segmenter (choose from {', '.join(SEGMENTERS)})")

    def class_names(self, settings, defect_types: list[str]) -> list[str]:
        if GOOD in defect_types:
            raise InputError(f"a defect type is called '{GOOD}'; it clashes with the defect-free images")
        return [*sorted(defect_types), GOOD]  # train/good always trains a segmenter; test/good is always tested

    def check_data(self, settings: SegmentSettings, data) -> None:
        divisor = input_divisor(settings.model, settings.model_config())
        h, w = data.size
        if h % divisor or w % divisor:
            fit = lambda n: max(divisor, round(n / divisor) * divisor)  # noqa: E731
            raise InputError(f"--model {settings.model}: image size {h}x{w} must be a multiple of {divisor} on both "
                             f"sides; pass --resolution, e.g. {fit(h)}x{fit(w)}")

    def build_model(self, settings: SegmentSettings, data, classes):
        return create_segmenter(settings.model, data.channels, settings.model_config(), settings.weights)

    def architecture(self, settings: SegmentSettings, data, classes) -> dict:
        return architecture("segment", settings.model, data.channels, config=settings.model_config())

    def build_from_architecture(self, record: dict):
        return create_segmenter(record["name"], record["in_chans"], record.get("config"), rebuild=True)

    def learning_rate(self, settings: SegmentSettings) -> float:
        return float(settings.model_config().get("lr", settings.lr))

    def paired_good(self, settings: SegmentSettings) -> bool:
        return segmenter_spec(settings.model).paired_good  # DRAEM and DeSTSeg learn towards the good twin

    def step_fn(self, settings: SegmentSettings, device):
        return segmenter_spec(settings.model).step(settings.model_config(), settings.loss, settings.steps, device)

    def sample_losses(self, model, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, settings):
        """Steering's hardness of candidate samples: their pixel loss inside the mask under the current model."""
        return mask_losses(defect_logits(model(images)), masks)

    def make_optimizer(self, model, steps: int, settings: SegmentSettings):
        """The model's own optimiser and schedule (DeSTSeg: one per stage), else the runner's default (None)."""
        own = segmenter_spec(settings.model).optimizer
        if own is None:
            return None
        return own(model, steps, self.learning_rate(settings), settings.weight_decay, settings.model_config(),
                   settings.warmup_steps)

    def evaluate(self, model, tests: TestSet, settings: SegmentSettings, device) -> Evaluation:
        maps = predict_maps(model, tests.images, device, settings.eval_batch_size)
        metrics = segmentation_metrics(maps, tests.masks, sigma=float(settings.smooth_sigma))
        metrics = {k: (None if v is None or not math.isfinite(v) else round(float(v), 6)) for k, v in metrics.items()}
        return Evaluation(metrics, maps)

    def log_evaluation(self, writer, tests: TestSet, evaluation: Evaluation, settings: SegmentSettings) -> None:
        """Metrics, the pixel and image PR curves, and image | true mask | predicted map for a few defects."""
        maps, step = evaluation.outputs, settings.steps
        for key, value in evaluation.metrics.items():
            if value is not None:
                writer.add_scalar(f"test/{key}", value, step)
        writer.add_pr_curve("test/pixel_pr", tests.masks.flatten(), maps.flatten(), step, num_thresholds=201)
        writer.add_pr_curve("test/image_pr", torch.from_numpy(image_labels(tests.masks)),
                            torch.from_numpy(image_scores(maps, float(settings.smooth_sigma))).clamp(0, 1), step,
                            num_thresholds=201)
        picks = list(range(min(GRID_IMAGES, tests.n_defect)))
        if not picks:
            return
        images = tests.images[picks].float() / 255.0
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        masks = tests.masks[picks].float().expand(-1, 3, -1, -1)
        preds = maps[picks].expand(-1, 3, -1, -1)
        rows = torch.stack([images, masks, preds], dim=1).flatten(0, 1)
        writer.add_image("test/image|mask|prediction", make_grid(rows, nrow=3, padding=2, pad_value=0.5), step)

    def prediction_rows(self, tests: TestSet, evaluation: Evaluation, threshold: dict | None,
                        settings: SegmentSettings) -> list[dict]:
        maps = evaluation.outputs
        scores = image_scores(maps, float(settings.smooth_sigma))
        pixel = None if threshold is None else threshold["pixel"]
        rows = []
        for i, name in enumerate(tests.names):
            row = {"file": name, "true_class": tests.classes[int(tests.labels[i])],
                   "true_defect_pixels": int(tests.masks[i].sum()), "image_score": round(float(scores[i]), 6)}
            if pixel is not None:
                predicted = int((maps[i] >= pixel).sum())
                row.update({"defect_pixels": predicted, "predicted": "defect" if predicted else GOOD,
                            "threshold": round(pixel, 6)})
            rows.append(row)
        return rows

    def paired_tests(self, tests: TestSet, baseline: Evaluation, arm: Evaluation, settings: SegmentSettings,
                     seed: int) -> dict:
        exact = {k: (baseline.metrics.get(k), arm.metrics.get(k)) for k in METRIC_KEYS}
        return segmentation_intervals(baseline.outputs, arm.outputs, tests.masks, sigma=float(settings.smooth_sigma),
                                      n_resamples=settings.bootstrap_resamples, seed=seed, exact=exact)

    def decision_threshold(self, model, pool, settings: SegmentSettings, device) -> dict:
        """The pixel F1-best threshold on the arm's real training images (base defects + train/good)."""
        maps = predict_maps(model, pool.images, device, settings.eval_batch_size)
        return {"pixel": f1_best_threshold(maps, pool.masks.cpu()), "smooth_sigma": float(settings.smooth_sigma),
                "chosen_on": f"pixel F1 on the {len(pool)} real training images (base-set defects + train/good)"}

    def predictor(self, meta: dict, threshold: float | None) -> MapPrediction:
        pixel = stored_threshold(meta, threshold, "pixel", "pixel")
        return MapPrediction(pixel, float((meta.get("threshold") or {}).get("smooth_sigma", 4.0)))

    def export_graph(self, model):
        return DefectMap(model).eval()

    def compile_torchscript(self, graph, example, meta: dict):
        return trace_torchscript(graph, example, meta)

    def check_export(self, model, graph, path: Path, fmt: str, images) -> None:
        check_probabilities(graph, path, fmt, images)


TASK = SegmentTask()
