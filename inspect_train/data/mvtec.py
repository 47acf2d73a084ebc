"""Find the files of one category in an MVTec-AD-style folder.

Layout: <root>/<category>/train/good, <root>/<category>/test/good,
<root>/<category>/test/<defect>/<stem>.<ext> and
<root>/<category>/ground_truth/<defect>/<stem>_mask.png.
Scanning checks the structure (folders, mask files, counts); pixel checks
happen when images are loaded (see images.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inspect_train.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MIN_IMAGES_PER_DEFECT = 2


@dataclass(frozen=True)
class DefectImage:
    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.name


@dataclass
class CategoryIndex:
    """Paths of every image of one category, grouped by split and defect type."""

    root: Path
    category: str
    train_good: list[Path] = field(default_factory=list)
    test_good: list[Path] = field(default_factory=list)
    defects: dict[str, list[DefectImage]] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.root / self.category

    @property
    def defect_types(self) -> list[str]:
        return sorted(self.defects)

    def defect_by_name(self, defect: str) -> dict[str, DefectImage]:
        return {item.name: item for item in self.defects[defect]}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_mask(gt_folder: Path, image: Path) -> Path | None:
    """The mask of test/<defect>/<stem>.<ext> is ground_truth/<defect>/<stem>_mask.<any image ext>."""
    preferred = gt_folder / f"{image.stem}_mask.png"
    if preferred.is_file():
        return preferred
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = gt_folder / f"{image.stem}_mask{suffix}"
        if candidate.is_file():
            return candidate
    return None


def scan_category(data_root: str | Path, category: str) -> CategoryIndex:
    """Index one category, raising InputError for any structural problem."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found")
    folder = root / category
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        hint = f" (found: {', '.join(available)})" if available else ""
        raise InputError(f"{folder}: category '{category}' not found{hint}")
    index = CategoryIndex(root=root, category=category)
    train_good = folder / "train" / "good"
    if not train_good.is_dir():
        raise InputError(f"{train_good}: missing folder train/good (defect-free training images)")
    index.train_good = list_images(train_good)
    if not index.train_good:
        raise InputError(f"{train_good}: no images")
    test = folder / "test"
    if not test.is_dir():
        raise InputError(f"{test}: missing folder test/ (defect images)")
    if (test / "good").is_dir():
        index.test_good = list_images(test / "good")
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir() and p.name != "good"):
        images = list_images(defect_dir)
        gt_folder = folder / "ground_truth" / defect_dir.name
        items = []
        for image in images:
            mask = find_mask(gt_folder, image)
            if mask is None:
                raise InputError(
                    f"{image}: missing mask (expected {gt_folder / (image.stem + '_mask.png')})"
                )
            items.append(DefectImage(image=image, mask=mask))
        if len(items) < MIN_IMAGES_PER_DEFECT:
            raise InputError(
                f"{defect_dir}: defect type '{defect_dir.name}' has {len(items)} image(s); "
                f"at least {MIN_IMAGES_PER_DEFECT} are needed to split base and test sets"
            )
        index.defects[defect_dir.name] = items
    if not index.defects:
        raise InputError(f"{test}: no defect folders (test/<defect>/) found")
    return index
