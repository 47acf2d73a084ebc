"""Detection metrics: COCO mAP per defect type and mean, and image-level decisions from the boxes.

Box metrics come from torchmetrics' `MeanAveragePrecision` (the COCO evaluator, pycocotools backend): mAP@0.5
and mAP@0.5:0.95 over the defect types, and each type's AP at both, read from the evaluator's precision table
the way COCO's own summary reads it (the mean of the 101-point interpolated precision at IoU 0.5, all areas, up
to 100 boxes per image). A type with no true box in the test set has no AP.

Image level, an image's score is its highest box score (0 without a box). `recall_at_fpr` is the share of test
defect images flagged when the threshold lets through at most `fpr` of the test/good images (the threshold is
the score of the good image just past that allowance; an image is flagged when its score is strictly above it),
so two detectors are compared at the same false-alarm rate. `image_auroc` ranks defect images against good ones.

Paired bootstrap (`detection_intervals`): the test images are resampled, the same draw for both detectors, and
mAP recomputed on each resample. Re-running the evaluator hundreds of times would take minutes per arm, so the
matching of boxes, which COCO does image by image, is done once by pycocotools' own per-image evaluation, and each
resample re-accumulates those matches (an image drawn twice counts twice) into COCO's interpolated precision,
written here in a few lines; on the full test set it gives the evaluator's numbers (tests/test_detect.py).

Detections and truths are lists, one entry per image: {"boxes": (M, 4) x0 y0 x1 y1, "scores": (M,), "labels":
(M,)} and {"boxes", "labels"}, labels being defect-type indices.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.metrics import roc_auc_score

from inspect_train.metrics.paired import _bootstrap_many, _undefined

BACKEND = "pycocotools"
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_BOXES = 100


def recall_key(fpr: float) -> str:
    """The metric name of recall at a false-positive rate, e.g. recall_at_fpr_0.05."""
    return f"recall_at_fpr_{float(fpr):g}"


def _evaluator(extended: bool):
    from torchmetrics.detection import MeanAveragePrecision  # heavy optional dependency: only mAP needs it

    # sync_on_compute off: under torchrun rank 0 evaluates the whole test set alone while the other ranks wait at
    # a barrier, so the evaluator's default gather across processes would wait for ranks that never call it.
    return MeanAveragePrecision(iou_type="bbox", box_format="xyxy", class_metrics=True, extended_summary=extended,
                                backend=BACKEND, sync_on_compute=False)


def _as_float(value) -> float | None:
    value = float(value)
    return None if value < 0 or not math.isfinite(value) else value


def _clean(items: list[dict], with_scores: bool) -> list[dict]:
    """CPU tensors of the right dtypes and shapes (the evaluator is strict about them)."""
    out = []
    for item in items:
        entry = {"boxes": torch.as_tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4).cpu(),
                 "labels": torch.as_tensor(item["labels"], dtype=torch.long).reshape(-1).cpu()}
        if with_scores:
            entry["scores"] = torch.as_tensor(item["scores"], dtype=torch.float32).reshape(-1).cpu()
        out.append(entry)
    return out


def box_ap(detections: list[dict], truths: list[dict], class_names: list[str] | None = None) -> dict:
    """mAP@0.5, mAP@0.5:0.95 and, with `class_names` (index -> name), each type's AP at both."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection entries for {len(truths)} images")
    metric = _evaluator(extended=class_names is not None)
    metric.update(_clean(detections, True), _clean(truths, False))
    result = metric.compute()
    out: dict = {"map_50": _as_float(result["map_50"]), "map_50_95": _as_float(result["map"])}
    if class_names is None:
        return out
    ids = [int(c) for c in torch.atleast_1d(result["classes"]).tolist()]
    precision = result["precision"]  # (IoU thresholds, 101 recall points, classes, areas, max detections)
    per_50, per_all = {}, {}
    for name_index, name in enumerate(class_names):
        if name_index not in ids:
            per_50[name] = per_all[name] = None  # neither a true nor a predicted box of this type
            continue
        k = ids.index(name_index)
        table = precision[:, :, k, 0, -1]
        valid = table[table > -1]
        per_all[name] = float(valid.mean()) if valid.numel() else None
        first = table[0][table[0] > -1]
        per_50[name] = float(first.mean()) if first.numel() else None
    out["ap_50_per_class"] = per_50
    out["ap_50_95_per_class"] = per_all
    out["pr_curves_50"] = {name: precision[0, :, ids.index(i), 0, -1].clamp(min=0).tolist()
                           for i, name in enumerate(class_names) if i in ids and per_50[name] is not None}
    return out


def image_scores(detections: list[dict]) -> np.ndarray:
    """Each image's highest box score, 0 for an image without a box."""
    return np.array([float(torch.as_tensor(d["scores"]).max()) if len(d["scores"]) else 0.0 for d in detections],
                    dtype=np.float64)


def threshold_at_fpr(good_scores: np.ndarray, fpr: float) -> float | None:
    """The image-score threshold that flags (score > threshold) at most `fpr` of the good images."""
    good = np.sort(np.asarray(good_scores, dtype=np.float64))[::-1]
    if good.size == 0:
        return None
    allowed = int(math.floor(fpr * good.size + 1e-9))
    return -math.inf if allowed >= good.size else float(good[allowed])


def image_metrics(scores: np.ndarray, is_defect: np.ndarray, fpr: float) -> dict:
    """recall_at_fpr (and its threshold) and image_auroc from image scores."""
    scores, is_defect = np.asarray(scores, dtype=np.float64), np.asarray(is_defect, dtype=bool)
    threshold = threshold_at_fpr(scores[~is_defect], fpr)
    recall = None
    if threshold is not None and is_defect.any():
        recall = float(np.mean(scores[is_defect] > threshold))
    auroc = float(roc_auc_score(is_defect, scores)) if is_defect.any() and not is_defect.all() else None
    return {recall_key(fpr): recall, "image_auroc": auroc,
            "image_threshold_at_fpr": None if threshold is None or not math.isfinite(threshold) else threshold}


def flagged(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Images whose score is above the threshold (none flagged without one)."""
    scores = np.asarray(scores, dtype=np.float64)
    if threshold is None:
        return np.zeros(scores.shape, dtype=bool)
    return scores > threshold


def detection_metrics(detections: list[dict], truths: list[dict], is_defect, class_names: list[str],
                      fpr: float) -> dict:
    """Every metric of one detector on one test set (see the module docstring)."""
    metrics = box_ap(detections, truths, class_names)
    metrics.update(image_metrics(image_scores(detections), np.asarray(is_defect, dtype=bool), fpr))
    return metrics


def box_f1_threshold(detections: list[dict], truths: list[dict]) -> float:
    """The box score threshold with the best F1 at IoU 0.5 over all images and types together; a box is right
    when COCO's matching (`coco_matches`: each image's boxes claim unclaimed true boxes of their type in score
    order) pairs it with a true box. 0.5 when there is no box or no true box."""
    labels = [int(v) for item in [*detections, *truths] for v in torch.as_tensor(item["labels"]).reshape(-1).tolist()]
    tables = coco_matches(detections, truths, max(labels, default=-1) + 1)
    n_true = sum(int(table["n_true"].sum()) for table in tables)
    scores = np.concatenate([table["score"] for table in tables]) if tables else np.zeros(0)
    if not scores.size or n_true == 0:
        return 0.5
    hits = np.concatenate([table["tp"][0] for table in tables])  # IoU_THRESHOLDS[0] is 0.5
    order = np.argsort(-scores, kind="stable")
    ranked, correct = scores[order], hits[order]
    tp = np.cumsum(correct)
    kept = np.arange(1, len(ranked) + 1)
    f1 = 2 * tp / (kept + n_true)
    # A threshold keeps every box scoring at least it: only the last box of a run of equal scores is a cut.
    last = np.r_[ranked[1:] != ranked[:-1], True]
    best = int(np.argmax(np.where(last, f1, -1)))
    return float(ranked[best])


# ----------------------------------------------------------------------------- paired bootstrap of mAP


def _coco_xywh(boxes: torch.Tensor) -> list[list[float]]:
    return [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes.tolist()]


def coco_matches(detections: list[dict], truths: list[dict], n_classes: int) -> list[dict]:
    """Per defect type: every box of the test set in COCO's order (score, then image), its score, whether it is a
    true or a false positive at each IoU threshold (T, D), the image it is in, and each image's number of true boxes.

    The matching is pycocotools' per-image evaluation (all areas, up to MAX_BOXES per image)."""
    detections, truths = _clean(detections, True), _clean(truths, False)
    n = len(truths)
    annotations, results = [], []
    for i, truth in enumerate(truths):
        for box, label in zip(_coco_xywh(truth["boxes"]), truth["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label), "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    for i, det in enumerate(detections):
        for box, label, score in zip(_coco_xywh(det["boxes"]), det["labels"].tolist(), det["scores"].tolist()):
            results.append({"image_id": i, "category_id": int(label), "bbox": box, "score": float(score)})
    n_true = np.zeros((n_classes, n), dtype=np.int64)
    for a in annotations:
        n_true[a["category_id"], a["image_id"]] += 1
    empty = {"image": np.zeros(0, dtype=np.int64), "score": np.zeros(0),
             "tp": np.zeros((len(IOU_THRESHOLDS), 0), dtype=bool),
             "fp": np.zeros((len(IOU_THRESHOLDS), 0), dtype=bool)}
    if not results:
        return [{**empty, "n_true": n_true[k]} for k in range(n_classes)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports its progress on stdout
        truth_set = COCO()
        truth_set.dataset = {"images": [{"id": i} for i in range(n)], "annotations": annotations,
                             "categories": [{"id": k} for k in range(n_classes)]}
        truth_set.createIndex()
        found = truth_set.loadRes(results)
        evaluator = COCOeval(truth_set, found, "bbox")
        evaluator.params.imgIds = list(range(n))
        evaluator.params.catIds = list(range(n_classes))
        evaluator.params.iouThrs = IOU_THRESHOLDS.copy()
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        evaluator.params.maxDets = [MAX_BOXES]
        evaluator.evaluate()
    tables = []
    for k in range(n_classes):
        scores, images, tps, fps = [], [], [], []
        for i in range(n):
            entry = evaluator.evalImgs[k * n + i]
            if entry is None or not len(entry["dtScores"]):
                continue
            matched = np.asarray(entry["dtMatches"]) > 0
            ignored = np.asarray(entry["dtIgnore"]).astype(bool)
            scores.append(np.asarray(entry["dtScores"], dtype=np.float64))
            images.append(np.full(len(entry["dtScores"]), i, dtype=np.int64))
            tps.append(matched & ~ignored)
            fps.append(~matched & ~ignored)
        if not scores:
            tables.append({**empty, "n_true": n_true[k]})
            continue
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        tables.append({"image": np.concatenate(images)[order], "score": np.concatenate(scores)[order],
                       "tp": np.concatenate(tps, axis=1)[:, order],
                       "fp": np.concatenate(fps, axis=1)[:, order], "n_true": n_true[k]})
    return tables


def ap_from_matches(tables: list[dict], counts: np.ndarray | None = None) -> dict[str, float | None]:
    """mAP@0.5 and mAP@0.5:0.95 of the images weighted by `counts` (how often each is drawn; None: once each),
    accumulated as COCO does: cumulative precision and recall down the score order, precision made non-increasing,
    read at 101 recall points; types without a true box are left out of the mean."""
    per_class = []
    for table in tables:
        weights = np.ones(len(table["n_true"]), dtype=np.int64) if counts is None else np.asarray(counts)
        n_true = int(weights @ table["n_true"])
        if n_true == 0:
            continue
        repeat = weights[table["image"]]
        tp = np.repeat(table["tp"], repeat, axis=1).cumsum(axis=1)
        fp = np.repeat(table["fp"], repeat, axis=1).cumsum(axis=1)
        aps = np.zeros(len(IOU_THRESHOLDS))
        for t in range(len(IOU_THRESHOLDS)):
            if tp.shape[1] == 0:
                continue
            recall = tp[t] / n_true
            precision = tp[t] / (tp[t] + fp[t] + np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            where = np.searchsorted(recall, RECALL_POINTS, side="left")
            aps[t] = np.where(where < len(precision), precision[np.minimum(where, len(precision) - 1)], 0.0).mean()
        per_class.append(aps)
    if not per_class:
        return {"map_50": None, "map_50_95": None}
    table = np.stack(per_class)
    return {"map_50": float(table[:, 0].mean()), "map_50_95": float(table.mean())}


def detection_intervals(baseline: list[dict], arm: list[dict], truths: list[dict], is_defect, n_classes: int,
                        n_resamples: int = 200, seed: int = 0, confidence: float = 0.95,
                        exact: dict | None = None) -> dict[str, dict]:
    """Paired bootstrap 95% intervals of arm - baseline for map_50, map_50_95 and image_auroc, test images
    resampled with replacement (the same draw for both). `exact` {metric: (baseline, arm)}, e.g. the evaluator's
    own values, supplies each reported difference."""
    is_defect = np.asarray(is_defect, dtype=bool)
    tables = {"baseline": coco_matches(baseline, truths, n_classes), "arm": coco_matches(arm, truths, n_classes)}
    scores = {"baseline": image_scores(baseline), "arm": image_scores(arm)}
    n = len(truths)

    def statistic(indices):
        counts = np.bincount(indices, minlength=n)
        values = {name: ap_from_matches(tables[name], counts) for name in tables}
        labels = is_defect[indices]
        for name in tables:
            both = labels.any() and not labels.all()
            values[name]["image_auroc"] = float(roc_auc_score(labels, scores[name][indices])) if both else None
        return {key: (values["baseline"][key], values["arm"][key]) for key in ("map_50", "map_50_95", "image_auroc")}

    intervals = _bootstrap_many(statistic, n, n_resamples, seed, confidence)
    for key, (low_value, high_value) in (exact or {}).items():
        if key in intervals:
            difference = None if _undefined(low_value) or _undefined(high_value) else high_value - low_value
            entry = intervals[key]
            if difference is not None and entry["difference"] is not None and entry["low"] is not None:
                shift = difference - entry["difference"]
                entry["low"], entry["high"] = entry["low"] + shift, entry["high"] + shift
            entry["difference"] = difference
    return intervals
