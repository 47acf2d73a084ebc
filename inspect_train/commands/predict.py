"""`inspect-train predict`: run a trained model file on new images and write what it decided.

A classifier gives each image's class; a segmenter its defect map, mask and image score; a detector its boxes
(those at or above the stored box-score threshold, or --threshold) with overlays, and every box it found in
detections.json (COCO style: images, categories, and the boxes as annotations with a score).

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

from inspect_train.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
HEAT_MAP = "inferno"


def register(subparsers) -> None:
    p = subparsers.add_parser("predict",
                              help="classify, segment or detect defects in new images with a trained model file")
    p.add_argument("--model", required=True,
                   help="model file of a classify, segment or detect run (OUT/P<k>/<arm>/model.pt)")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="image files and/or folders (a folder is scanned non-recursively for "
                        f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)})")
    p.add_argument("--out", required=True, help="output folder (predictions.csv; segmenters also overlays/, masks/; "
                                                 "detectors overlays/ and detections.json)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
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
    from inspect_train.data.images import read_image_array, resize_image, to_channels

    return to_channels(resize_image(read_image_array(path), resolution), channels)


def stored_threshold(meta: dict, override: float | None, key: str, what: str) -> float:
    """--threshold if given, else the model file's stored threshold `key` ("pixel" for a segmenter, "score" for a
    detector); either must lie in [0, 1]."""
    if override is not None:
        threshold = float(override)
    else:
        stored = meta.get("threshold") or {}
        if key not in stored:
            raise InputError(f"this model file stores no {what} threshold; pass --threshold")
        threshold = float(stored[key])
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: a {what} threshold lies between 0 and 1")
    return threshold


def write_detections(path: Path, paths: list[Path], found: list[dict], classes: list[str],
                     resolution: tuple[int, int], meta: dict) -> None:
    """Every box the detector found, COCO style: the images (at the model's resolution, where the boxes are), the
    defect types as categories, and the boxes as annotations with their score."""
    import json

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
              "images": [{"id": i, "file_name": str(p), "width": w, "height": h} for i, p in enumerate(paths)],
              "categories": [{"id": k, "name": name} for k, name in enumerate(classes) if name != "good"],
              "annotations": annotations}
    path.write_text(json.dumps(record))


def defect_logits(output):
    """A segmenter's defect logits: DRAEM returns (reconstruction, logits), the others the logits alone."""
    return output[-1] if isinstance(output, (tuple, list)) else output


def heat_map_colours():
    """(256, 3) uint8 colour table; the map is drawn on a fixed 0..1 scale so images are comparable."""
    import numpy as np
    from matplotlib import colormaps

    return (colormaps[HEAT_MAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def overlay_panel(image, prob, mask, colours):
    """image | heat map | image with the mask tinted and outlined in red, side by side (H, 3W, 3) uint8."""
    import numpy as np
    from scipy import ndimage

    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    heat = colours[np.clip(prob * 255 + 0.5, 0, 255).astype(np.uint8)]
    tinted = rgb.astype(np.float32)
    tinted[mask] = 0.55 * tinted[mask] + 0.45 * np.array([255.0, 0.0, 0.0])
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    tinted[edge] = (255.0, 0.0, 0.0)
    return np.concatenate([rgb, heat, tinted.round().astype(np.uint8)], axis=1)


def run_predict(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from inspect_train.tasks.common import choose_device
    from inspect_train.metrics.segmentation import image_scores
    from inspect_train.models.checkpoint import load_model
    from inspect_train.progress import progress_bar

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    paths = find_images(args.images)
    device = choose_device(args.device)
    model, meta = load_model(args.model, device)
    task = meta["task"]
    if task not in ("classify", "segment", "detect"):
        raise InputError(f"{args.model}: unknown task '{task}' in the model file")
    if task == "classify" and args.threshold is not None:
        raise InputError("--threshold applies to segmenters and detectors; a classifier predicts its most probable "
                         "class")
    resolution = (int(meta["resolution"][0]), int(meta["resolution"][1]))
    channels = int(meta["channels"])
    classes = [str(c) for c in meta["classes"]]
    if task == "segment":
        threshold = stored_threshold(meta, args.threshold, "pixel", "pixel")
        sigma = float((meta.get("threshold") or {}).get("smooth_sigma", 4.0))
        colours = heat_map_colours()
        header = ["file", "image_score", "defect_pixels", "predicted", "threshold"]
    elif task == "detect":
        threshold = stored_threshold(meta, args.threshold, "score", "box score")
        header = ["file", "image_score", "boxes_kept", "predicted", "threshold", "boxes"]
        found_all: list[dict] = []
    else:
        header = ["file", "predicted_class", "score", *(f"p_{c}" for c in classes)]

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".predict-", dir=out))
    stems = output_stems(paths)
    finished = False
    try:
        if task in ("segment", "detect"):
            (stage / "overlays").mkdir()
        if task == "segment":
            (stage / "masks").mkdir()
        rows = []
        with torch.inference_mode(), progress_bar(total=len(paths), desc="predict", unit="img") as bar:
            for start in range(0, len(paths), args.batch_size):
                chunk = paths[start:start + args.batch_size]
                images = torch.stack([load_input(p, resolution, channels) for p in chunk])
                x = images.to(device).float().div_(255.0)
                if task == "classify":
                    probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
                    for path, p in zip(chunk, probs):
                        best = int(p.argmax())
                        rows.append([str(path), classes[best], f"{p[best]:.8g}", *(f"{v:.8g}" for v in p)])
                elif task == "detect":
                    from inspect_train.tasks.detect import FOUND_COLOUR, box_text, draw_boxes

                    for i, (path, found) in enumerate(zip(chunk, model(x))):
                        found = {k: v.detach().cpu() for k, v in found.items()}
                        found_all.append(found)
                        keep = found["scores"] >= threshold
                        best = float(found["scores"].max()) if len(found["scores"]) else 0.0
                        kept = int(keep.sum())
                        rows.append([str(path), f"{best:.8g}", kept, "defect" if kept else "good", f"{threshold:.8g}",
                                     box_text(found, classes, threshold)])
                        plain = draw_boxes(images[i], found["boxes"][:0], FOUND_COLOUR)
                        boxed = draw_boxes(images[i], found["boxes"][keep], FOUND_COLOUR)
                        panel = torch.cat([plain, boxed], dim=2)  # image | the boxes kept
                        Image.fromarray(panel.permute(1, 2, 0).numpy()).save(
                            stage / "overlays" / f"{stems[start + i]}.png")
                else:
                    maps = torch.sigmoid(defect_logits(model(x)).float())[:, 0].cpu().numpy()
                    scores = image_scores(maps, sigma)
                    pictures = images.permute(0, 2, 3, 1).numpy()
                    for i, path in enumerate(chunk):
                        mask = maps[i] >= threshold
                        defects = int(mask.sum())
                        rows.append([str(path), f"{scores[i]:.8g}", defects, "defect" if defects else "good",
                                     f"{threshold:.8g}"])
                        stem = stems[start + i]
                        Image.fromarray(overlay_panel(pictures[i], maps[i], mask, colours)).save(
                            stage / "overlays" / f"{stem}.png")
                        Image.fromarray((mask * 255).astype(np.uint8)).save(stage / "masks" / f"{stem}_mask.png")
                bar.update(len(chunk))
        if task == "detect":
            write_detections(stage / "detections.json", paths, found_all, classes, resolution, meta)
        with open(stage / "predictions.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        for sub in ("overlays", "masks"):
            if (stage / sub).is_dir():
                (out / sub).mkdir(exist_ok=True)
                for item in (stage / sub).iterdir():
                    item.replace(out / sub / item.name)
        if (stage / "detections.json").is_file():
            (stage / "detections.json").replace(out / "detections.json")
        (stage / "predictions.csv").replace(out / "predictions.csv")
        finished = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not finished and created and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no trace where it found nothing
    extra = {"segment": " with overlays/ and masks/", "detect": " with overlays/ and detections.json"}.get(task, "")
    print(f"predicted {len(paths)} image(s) with {Path(args.model).name} ({task}); "
          f"wrote {out / 'predictions.csv'}{extra}")
    return 0
