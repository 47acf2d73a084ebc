"""`inspect-train predict`: run a trained model file on new images and write what it decided.

What each image becomes is the model's task's (its `predictor`, see inspect_train.tasks.prediction): a
classifier gives each image's class; a segmenter its defect map, mask and image score; a detector its boxes
(those at or above the stored box-score threshold, or --threshold) with overlays, and every box it found in
detections.json. This command reads the images, batches them and writes the results into place.

Images are read and resized exactly as training data is (read_image_array -> resize_image -> to_channels),
so a model sees the same pixels at inference as during training. Everything is written into a staging
folder inside --out and moved into place only when every image has been read and scored: an unreadable
image stops the run with one line naming it and leaves no half-written predictions behind.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import torch

from inspect_train.commands import COMMANDS
from inspect_train.data.images import read_image_array, resize_image, to_channels
from inspect_train.errors import InputError
from inspect_train.models.checkpoint import load_model, model_task
from inspect_train.output_paths import check_output_folder, make_folder
from inspect_train.progress import progress_bar
from inspect_train.tasks.common import choose_device
from inspect_train.validators import positive_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CSV_NAME = "predictions.csv"


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help=COMMANDS["predict"][1])
    p.add_argument("--model", required=True,
                   help="model file of a classify, segment or detect run (OUT/P<k>/<arm>/model.pt)")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="image files and/or folders (a folder is scanned non-recursively for "
                        f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)})")
    p.add_argument("--out", required=True, help="output folder (predictions.csv; segmenters also overlays/, masks/; "
                                                 "detectors overlays/ and detections.json)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--threshold", type=float, default=None,
                   help="segmenters: pixel threshold on the defect probability; detectors: box score threshold "
                        "(default: the one stored in the model)")
    p.set_defaults(func=run_predict)


def find_images(entries: list[str]) -> list[Path]:
    """The image files named or contained (non-recursively, sorted) in `entries`, each once, in order."""
    found: list[Path] = []
    seen: set[Path] = set()
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            candidates = [path]  # named explicitly: try to read it whatever its suffix
        else:
            raise InputError(f"--images {entry}: no such file or folder")
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    if not found:
        raise InputError(f"--images {' '.join(entries)}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return found


def output_stems(paths: list[Path]) -> list[str]:
    """One output name per image: its stem, numbered (-2, -3...) when two images share a stem."""
    used: dict[str, int] = {}
    stems = []
    for path in paths:
        count = used.get(path.stem, 0) + 1
        used[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems


def load_input(path: Path, resolution: tuple[int, int], channels: int):
    """uint8 (C, H, W) at the model's resolution and channel count, prepared as training prepares its images."""
    return to_channels(resize_image(read_image_array(path), resolution), channels)


def move_into(stage: Path, out: Path) -> None:
    """The staged results into --out: each folder's files merged into the folder of that name, then the other
    files, predictions.csv last (its presence says the run finished)."""
    for item in sorted(stage.iterdir()):
        if item.is_dir():
            (out / item.name).mkdir(exist_ok=True)
            for inner in item.iterdir():
                inner.replace(out / item.name / inner.name)
    for item in sorted(stage.iterdir()):
        if item.is_file() and item.name != CSV_NAME:
            item.replace(out / item.name)
    (stage / CSV_NAME).replace(out / CSV_NAME)


def run_predict(args) -> int:
    out = check_output_folder(args.out)
    paths = find_images(args.images)
    device = choose_device(args.device)
    model, meta = load_model(args.model, device)
    task = model_task(meta, args.model)
    predictor = task.predictor(meta, args.threshold)
    resolution = (int(meta["resolution"][0]), int(meta["resolution"][1]))
    channels = int(meta["channels"])

    created = not out.exists()
    make_folder(out)
    stage = Path(tempfile.mkdtemp(prefix=".predict-", dir=out))
    stems = output_stems(paths)
    finished = False
    try:
        for folder in predictor.folders:
            (stage / folder).mkdir()
        rows = []
        with torch.inference_mode(), progress_bar(total=len(paths), desc="predict", unit="img") as bar:
            for start in range(0, len(paths), args.batch_size):
                chunk = paths[start:start + args.batch_size]
                images = torch.stack([load_input(p, resolution, channels) for p in chunk])
                x = images.to(device).float().div_(255.0)
                rows += predictor.batch(model, images, x, chunk, stems[start:start + len(chunk)], stage)
                bar.update(len(chunk))
        predictor.finish(stage, paths)
        with open(stage / CSV_NAME, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(predictor.header)
            writer.writerows(rows)
        move_into(stage, out)
        finished = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not finished and created and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no trace where it found nothing
    print(f"predicted {len(paths)} image(s) with {Path(args.model).name} ({task.name}); "
          f"wrote {out / CSV_NAME}{predictor.written}")
    return 0
