"""The classify task: which defect is it? A timm classifier over the defect types (plus `good` with
`with_good`), plugged into the protocol runner (inspect_train.tasks.runner).

Classes are the defect types, as in the DFMGAN paper. Scores: accuracy, balanced accuracy, per-class
accuracy and the confusion matrix from the arg-max, and AU-PR (one-vs-rest average precision of each class's
softmax score, and their macro mean); with `with_good` also defect-vs-good AP and AUROC on 1 - p(good).
Open set (`--open-set`, a held-out type's images in the test set): the unknown scores' AUROC, AU-PR and
FPR@95%TPR and the closed-set accuracy (inspect_train.metrics.open_set), with the classification metrics of the
known images alone under `closed_set`.

Shipped (predict, export): each image's most probable class and every class's probability; the exported graph
gives the softmax over the classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inspect_train.errors import InputError
from inspect_train.metrics.classification import classification_metrics
from inspect_train.metrics.open_set import OPEN_SET_METRICS, open_set_metrics, unknown_scores
from inspect_train.metrics.paired import classification_ap_interval, mcnemar_exact, unknown_auroc_intervals
from inspect_train.models.classifier import check_model_args
from inspect_train.models.registry import architecture, create_classifier
from inspect_train.online import GOOD
from inspect_train.settings import ClassifySettings
from inspect_train.tasks.common import confusion_image
from inspect_train.tasks.exporting import check_probabilities, trace_torchscript
from inspect_train.tasks.open_set import UNKNOWN
from inspect_train.tasks.runner import Evaluation, TestSet

GOOD_METRICS = ["defect_vs_good_ap", "defect_vs_good_auroc"]


def class_names_for(defect_types: list[str], with_good: bool) -> list[str]:
    names = sorted(defect_types)
    if with_good:
        if GOOD in names:
            raise InputError(f"a defect type is called '{GOOD}'; it clashes with the good class of --with-good")
        names.append(GOOD)
    if len(names) < 2:
        raise InputError(f"classification needs at least two classes, the data has {names}; pass --with-good")
    return names


@torch.no_grad()
def class_logits(model, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    """Logits (N, K) on the CPU, from uint8 images (the energy score needs them, not just the softmax)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].to(device).float().div_(255.0)
        out.append(model(chunk).float().cpu())
    return torch.cat(out)


def class_probabilities(model, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    """Softmax scores (N, K) on the CPU, from uint8 images."""
    return torch.softmax(class_logits(model, images, device, batch_size), dim=1)


def _open_set_evaluation(logits: torch.Tensor, tests: TestSet) -> Evaluation:
    """The open-set scores on every image, and the closed-set metrics on the known images alone."""
    probabilities = torch.softmax(logits, dim=1)
    known = ~tests.unknown
    scores = unknown_scores(logits.numpy())
    metrics = open_set_metrics(logits.numpy(), tests.labels.numpy(), tests.unknown.numpy(), scores=scores)
    metrics["closed_set"] = classification_metrics(probabilities[known].numpy(), tests.labels[known].numpy(),
                                                   tests.classes, good_class=GOOD)
    return Evaluation(metrics, probabilities,
                      unknown_scores={name: torch.from_numpy(values) for name, values in scores.items()})


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's cross-entropy (-log p(true type)): what steering ranks types and candidates by."""
    return F.cross_entropy(logits.detach(), labels, reduction="none")


def _step(model, batch):
    logits = model(batch.images)
    loss = F.cross_entropy(logits, batch.labels)
    with torch.no_grad():
        per_row = row_losses(logits, batch.labels)
        hit = (logits.argmax(1) == batch.labels).float()
        scalars = {}
        real, syn = ~batch.synthetic, batch.synthetic
        if real.any():
            scalars["accuracy_real"] = hit[real].mean()
        if syn.any():
            scalars["accuracy_synthetic"] = hit[syn].mean()
    return loss, scalars, per_row


class Softmax(nn.Module):
    """The exported graph: the classifier's logits turned into class probabilities."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(images), dim=1)


class ClassPrediction:
    """predict: each image's most probable class, its probability, and every class's probability."""

    folders = ()
    written = ""

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.header = ["file", "predicted_class", "score", *(f"p_{c}" for c in classes)]

    def batch(self, model, images, x, files: list[Path], stems: list[str], stage: Path) -> list[list]:
        probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        rows = []
        for path, p in zip(files, probs):
            best = int(p.argmax())
            rows.append([str(path), self.classes[best], f"{p[best]:.8g}", *(f"{v:.8g}" for v in p)])
        return rows

    def finish(self, stage: Path, files: list[Path]) -> None:
        return None  # the rows say it all


class ClassifyTask:
    name = "classify"
    settings_class = ClassifySettings
    toy_preset, data_preset = "classify-toy", "classify-256"
    headline = "accuracy"
    open_set_metrics = OPEN_SET_METRICS  # what an --open-set run summarises, and its bar chart
    open_set_headline = "msp_auroc"
    find_unused_parameters = False
    output_name = "probabilities"
    output_description = "probabilities: softmax (N, classes)"
    export_refusals: dict[str, str] = {}

    def summary_metrics(self, settings: ClassifySettings) -> list[str]:
        return ["accuracy", "balanced_accuracy", "auprc", *(GOOD_METRICS if settings.with_good else [])]

    def check_settings(self, settings: ClassifySettings) -> None:
        check_model_args(settings.model, settings.weights)

    def class_names(self, settings: ClassifySettings, defect_types: list[str]) -> list[str]:
        return class_names_for(defect_types, settings.with_good)

    def check_data(self, settings, data) -> None:
        return None

    def build_model(self, settings: ClassifySettings, data, classes: list[str]):
        return create_classifier(settings.model, len(classes), data.channels, settings.weights)

    def architecture(self, settings: ClassifySettings, data, classes: list[str]) -> dict:
        return architecture("classify", settings.model, data.channels, num_classes=len(classes))

    def build_from_architecture(self, record: dict):
        return create_classifier(record["name"], record["num_classes"], record["in_chans"])

    def learning_rate(self, settings) -> float:
        return float(settings.lr)

    def paired_good(self, settings) -> bool:
        return False  # a classifier never sees the paired good image

    def step_fn(self, settings, device):
        return _step

    def sample_losses(self, model, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, settings):
        """Steering's hardness of candidate samples: their cross-entropy under the current model."""
        return row_losses(model(images), labels)

    def evaluate(self, model, tests: TestSet, settings, device) -> Evaluation:
        logits = class_logits(model, tests.images, device, settings.eval_batch_size)
        if tests.unknown is not None:
            return _open_set_evaluation(logits, tests)
        probabilities = torch.softmax(logits, dim=1)
        metrics = classification_metrics(probabilities.numpy(), tests.labels.numpy(), tests.classes, good_class=GOOD)
        return Evaluation(metrics, probabilities)

    def log_evaluation(self, writer, tests: TestSet, evaluation: Evaluation, settings) -> None:
        metrics, step = evaluation.metrics, settings.steps
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"eval/{key}", value, step)
        if tests.unknown is not None:
            for name, score in (evaluation.unknown_scores or {}).items():
                writer.add_pr_curve(f"eval/pr/unknown_{name}", tests.unknown, score, step)
            metrics = metrics["closed_set"]  # the rest: the known images alone
            known = ~tests.unknown
            tests = TestSet(tests.names, tests.images[known], tests.masks[known], tests.labels[known], tests.classes,
                            tests.n_defect)
            evaluation = Evaluation(metrics, evaluation.outputs[known])
        writer.add_image("eval/confusion_matrix", confusion_image(metrics["confusion_matrix"], tests.classes), step)
        for group in ("per_class_accuracy", "per_class_ap"):
            for name, value in (metrics.get(group) or {}).items():
                writer.add_scalar(f"eval/{group}/{name}", value, step)
        for index, name in enumerate(tests.classes):
            positives = tests.labels == index
            if positives.any() and not positives.all():
                writer.add_pr_curve(f"eval/pr/{name}", positives, evaluation.outputs[:, index], step)
        if GOOD in tests.classes:
            defect = tests.labels != tests.classes.index(GOOD)
            writer.add_pr_curve("eval/pr/defect_vs_good", defect, 1 - evaluation.outputs[:, tests.classes.index(GOOD)],
                                step)

    def prediction_rows(self, tests: TestSet, evaluation: Evaluation, threshold, settings) -> list[dict]:
        probabilities = evaluation.outputs
        predicted = probabilities.argmax(1)
        scores = evaluation.unknown_scores or {}
        rows = []
        for i, name in enumerate(tests.names):
            unknown = tests.unknown is not None and bool(tests.unknown[i])
            row = {"file": name, "true_class": UNKNOWN if unknown else tests.classes[int(tests.labels[i])],
                   "predicted_class": tests.classes[int(predicted[i])],
                   # a held-out image has no right class to pick: blank, not wrong
                   "correct": "" if unknown else int(predicted[i] == tests.labels[i]),
                   "score": round(float(probabilities[i].max()), 6)}
            row.update({f"p_{c}": round(float(probabilities[i, j]), 6) for j, c in enumerate(tests.classes)})
            row.update({f"unknown_{s}": round(float(values[i]), 6) for s, values in scores.items()})
            rows.append(row)
        return rows

    def paired_tests(self, tests: TestSet, baseline: Evaluation, arm: Evaluation, settings, seed: int) -> dict:
        labels = tests.labels.numpy()
        right = lambda e: (e.outputs.argmax(1).numpy() == labels)  # noqa: E731
        if tests.unknown is not None:  # open set: flagging the held-out type, and accuracy on the known images
            known = ~tests.unknown.numpy()
            return {
                "closed_set_accuracy": mcnemar_exact(right(baseline)[known], right(arm)[known]),
                **unknown_auroc_intervals({k: v.numpy() for k, v in baseline.unknown_scores.items()},
                                          {k: v.numpy() for k, v in arm.unknown_scores.items()}, tests.unknown,
                                          n_resamples=settings.bootstrap_resamples, seed=seed),
            }
        return {
            "accuracy": mcnemar_exact(right(baseline), right(arm)),
            "auprc": classification_ap_interval(baseline.outputs.numpy(), arm.outputs.numpy(), labels,
                                                n_resamples=settings.bootstrap_resamples, seed=seed),
        }

    def decision_threshold(self, model, pool, settings, device):
        return None  # the arg-max decides

    def predictor(self, meta: dict, threshold: float | None) -> ClassPrediction:
        if threshold is not None:
            raise InputError("--threshold applies to segmenters and detectors; a classifier predicts its most "
                             "probable class")
        return ClassPrediction([str(c) for c in meta["classes"]])

    def export_graph(self, model):
        return Softmax(model).eval()

    def compile_torchscript(self, graph, example, meta: dict):
        return trace_torchscript(graph, example, meta)

    def check_export(self, model, graph, path: Path, fmt: str, images) -> None:
        check_probabilities(graph, path, fmt, images)


TASK = ClassifyTask()
