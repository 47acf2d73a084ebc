"""Write generated samples to disk: PNGs, an index, and COCO / YOLO boxes (one per mask component)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inspect_train.boxes import components_boxes


def _to_pil(x01: torch.Tensor) -> Image.Image:
    arr = (x01.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr[:, :, 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr, mode="RGB")


class SampleWriter:
    """Collects samples as they are written; `finish()` writes index.csv and the label files."""

    def __init__(self, out_dir: Path, defect_types: list[str], fmt: str | None = None, box_join: int = 0):
        self.out = Path(out_dir)
        self.fmt = fmt
        self.box_join = box_join
        self.defect_types = list(defect_types)
        for sub in ("images", "masks", "goods") + (("labels",) if fmt == "yolo" else ()):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.coco_images: list[dict] = []
        self.coco_annotations: list[dict] = []

    def add(self, defect_type: str, image01: torch.Tensor, mask01: torch.Tensor, good01: torch.Tensor | None) -> None:
        index = len(self.rows)
        name = f"{defect_type}_{index:06d}.png"
        _to_pil(image01).save(self.out / "images" / name)
        mask = (mask01[0] > 0.5).cpu().numpy()
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(self.out / "masks" / name)
        if good01 is not None:
            _to_pil(good01).save(self.out / "goods" / name)
        h, w = mask.shape
        row = {"image": f"images/{name}", "mask": f"masks/{name}",
               "good": f"goods/{name}" if good01 is not None else "", "defect_type": defect_type,
               "label": self.defect_types.index(defect_type), "mask_pixels": int(mask.sum())}
        if self.fmt:
            boxes = components_boxes(mask, self.box_join)
            row["boxes"] = len(boxes)
            if self.fmt == "coco":
                self.coco_images.append({"id": index, "file_name": f"images/{name}", "width": w, "height": h})
                for x, y, bw, bh in boxes:
                    self.coco_annotations.append({
                        "id": len(self.coco_annotations), "image_id": index, "category_id": row["label"],
                        "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
            else:
                lines = [f"{row['label']} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                         for x, y, bw, bh in boxes]
                (self.out / "labels" / f"{name[:-4]}.txt").write_text("".join(line + "\n" for line in lines))
        self.rows.append(row)

    def finish(self, meta: dict) -> None:
        with open(self.out / "index.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]) if self.rows else ["image"])
            writer.writeheader()
            writer.writerows(self.rows)
        categories = [{"id": i, "name": t} for i, t in enumerate(self.defect_types)]
        if self.fmt == "coco":
            (self.out / "annotations.json").write_text(json.dumps(
                {"info": meta, "images": self.coco_images, "annotations": self.coco_annotations,
                 "categories": categories}, indent=1))
        elif self.fmt == "yolo":
            (self.out / "classes.txt").write_text("".join(t + "\n" for t in self.defect_types))
            names = "\n".join(f"  {i}: {t}" for i, t in enumerate(self.defect_types))
            (self.out / "data.yaml").write_text(f"path: {self.out.resolve()}\ntrain: images\nval: images\n"
                                                f"names:\n{names}\n")
        (self.out / "generate.json").write_text(json.dumps(meta, indent=2))
