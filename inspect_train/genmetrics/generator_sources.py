"""Where `evaluate-gen`'s rows come from: every generator by its spec (a classic one built from the partition's base
set; a learned one from the checkpoints a classify/segment run cached in --generators or given with --checkpoint,
refused unless trained on this very base set) and folders of generated images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.registry import get_spec
from generators.spec import BuildRequest, GeneratorSpec
from inspect_train.checkpoint import read_checkpoint
from inspect_train.data.images import read_image_array
from inspect_train.errors import InputError
from inspect_train.genmetrics.sources import generated_pairs, load_pairs, sample_generator, tells_defect_types
from inspect_train.genmetrics.split import Split, base_only_data
from inspect_train.protocol import read_json
from inspect_train.tasks.generators import INDEX, loading, read_learned_checkpoint


class Source:
    """One row of every table: a name and how to draw n (image, mask) samples of a defect type."""

    def __init__(self, name: str, record: dict, draw):
        self.name, self.record, self.draw = name, record, draw


def parse_checkpoints(values: list[str]) -> list[tuple[str, Path]]:
    out = []
    for value in values:
        defect, sep, path = value.partition("=")
        if not sep or not defect or not path:
            raise InputError(f"--checkpoint {value}: expected DEFECT=PATH, e.g. crack=runs/gan/defect_crack.pt")
        out.append((defect, Path(path).expanduser()))
    return out


def cached_index(folder: Path, spec: GeneratorSpec) -> tuple[Path, dict]:
    """The index of a learned generator's checkpoints under a classify/segment generators folder (its own folder
    there, DIR/<its folder>/index.json; or DIR/index.json when DIR is that folder itself)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: generators folder not found")
    learned = spec.learned
    candidates = ([folder / learned.folder / INDEX] if learned.folder else []) + [folder / INDEX]
    other = None
    for path in candidates:
        if not path.is_file():
            continue
        index = read_json(path, "generator index")
        if not isinstance(index, dict) or not isinstance(index.get("defects"), dict):
            raise InputError(f"{path}: not a generators index (no 'defects')")
        holds = index.get("generator", spec.name)  # an index without the key is taken as this kind's
        if holds == spec.name:
            return path, index
        other = (path, holds)
    if other and not learned.folder:
        raise InputError(f"{other[0]}: holds {other[1]} generators, not {spec.name} ones")
    where = f"{learned.folder}/{INDEX}" if learned.folder else INDEX
    raise InputError(f"{folder}: no {learned.noun} here (no {where}); train them with classify/segment "
                     f"--aug {spec.name}")


def checkpoints_from_folder(folder: Path, spec: GeneratorSpec, split: Split, category: str,
                            defects: list[str]) -> dict[str, Path]:
    """The checkpoints a classify/segment run cached for this partition, refused unless trained on exactly this
    base set (else scoring against it would compare with images the generator never saw, and the generator may
    have seen this partition's test images)."""
    path, index = cached_index(folder, spec)
    if index.get("category") not in (None, category):
        raise InputError(f"{path}: generators were trained on category '{index['category']}', not '{category}'")
    entries = index["defects"].get(f"p{split.partition}")
    if not entries:
        have = ", ".join(sorted(index["defects"])) or "none"
        raise InputError(f"{path}: no generators for partition {split.partition} (has {have}); train them with "
                         f"classify/segment --aug {spec.name} --partitions {split.partition}")
    out = {}
    for defect in defects:
        entry = entries.get(defect)
        if entry is None:
            raise InputError(f"{path}: no P{split.partition} generator for defect type '{defect}' "
                             f"(has {', '.join(sorted(entries))})")
        if sorted(entry.get("base", [])) != sorted(split.base[defect]):
            raise InputError(f"{path}: the P{split.partition} '{defect}' generator was trained on another base set "
                             f"than {split.path} names; pass the --manifest that run used")
        checkpoint = path.parent / entry["checkpoint"]
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint}: listed in {path.name} but not found")
        out[defect] = checkpoint
    return out


def spec_of_checkpoint(path: Path, defect: str) -> tuple[GeneratorSpec, dict]:
    """Which learned generator wrote a --checkpoint file (so each goes to its own --aug), and the file's contents."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found (--checkpoint {defect}=...)")
    return read_learned_checkpoint(path)


def check_checkpoint(path: Path, state: dict, defect: str, split: Split, category: str) -> None:
    """An explicit checkpoint must be for this defect type and, where it records them, this category,
    partition and base set."""
    if state.get("defect_type") != defect:
        raise InputError(f"{path}: is a checkpoint for defect type '{state.get('defect_type')}', not '{defect}'")
    if state.get("category") not in (None, category):
        raise InputError(f"{path}: was trained on category '{state['category']}', not '{category}'")
    if state.get("partition") is not None and int(state["partition"]) != split.partition:
        raise InputError(f"{path}: was trained on partition {state['partition']}, not {split.partition}")
    base = state.get("base") or state.get("base_images")
    if base is not None and sorted(base) != sorted(split.base[defect]):
        raise InputError(f"{path}: was trained on another base set than {split.path} names for partition "
                         f"{split.partition}; pass the --manifest it was trained with")


def explicit_checkpoints(args, split: Split, category: str) -> dict[str, dict[str, Path]]:
    """--checkpoint DEFECT=PATH sorted by the generator that wrote each file: {generator: {defect: path}}."""
    out: dict[str, dict[str, Path]] = {}
    for defect, path in parse_checkpoints(args.checkpoint):
        if defect not in split.defects:
            raise InputError(f"--checkpoint {defect}=...: '{defect}' is not among the defect types scored "
                             f"({', '.join(split.defects)})")
        spec, state = spec_of_checkpoint(path, defect)
        if spec.name not in args.aug:
            raise InputError(f"--checkpoint {defect}={path}: is a {spec.name} checkpoint, but --aug has no {spec.name}")
        if defect in out.setdefault(spec.name, {}):
            raise InputError(f"--checkpoint: two {spec.name} checkpoints for defect type '{defect}'")
        check_checkpoint(path, state, defect, split, category)
        out[spec.name][defect] = path
    return out


def generator_checkpoints(args, spec: GeneratorSpec, explicit: dict[str, Path], split: Split,
                          category: str) -> tuple[dict[str, Path], str]:
    """One checkpoint per scored defect type for a learned generator: --checkpoint first, the rest from
    --generators; and where they came from (for results.json)."""
    missing = [d for d in split.defects if d not in explicit]
    if missing and not args.generators:
        if explicit:
            raise InputError(f"--aug {spec.name}: no checkpoint for defect type(s) {', '.join(missing)}; add "
                             "--checkpoint DEFECT=PATH, --generators DIR, or choose types with --defect")
        raise InputError(f"--aug {spec.name} needs --generators DIR (the OUT/generators folder of a classify/segment "
                         f"run with --aug {spec.name}) or --checkpoint DEFECT=PATH")
    found = checkpoints_from_folder(Path(args.generators), spec, split, category, missing) if missing else {}
    origin = "checkpoints" if not found else (f"{args.generators}" + (" + checkpoints" if explicit else ""))
    return {d: explicit.get(d) or found[d] for d in split.defects}, origin


class GeneratorSources:
    """The --aug generators of one evaluate-gen run: the learned ones' checkpoints resolved (and checked) first, so
    the comparison size can default to theirs; then each built for the partition's base set at that size."""

    def __init__(self, args, index, split: Split):
        self.args, self.index, self.split = args, index, split
        explicit = explicit_checkpoints(args, split, args.category)
        self.trained = {}  # {name: ({defect: checkpoint}, origin)}, in --aug order
        for name in args.aug:
            spec = get_spec(name)
            if spec.learned is not None:
                self.trained[name] = generator_checkpoints(args, spec, explicit.get(name, {}), split, args.category)
        # each learned generator's own size, as its first checkpoint records it
        self.sizes = {name: tuple(get_spec(name).learned.size_of(read_checkpoint(next(iter(found.values())))))
                      for name, (found, _) in self.trained.items()}
        self.options = {}
        for name in args.aug:
            spec = get_spec(name)
            self.options[name] = spec.flag_values(args, "evaluate-gen")
            if spec.check_options:
                spec.check_options(self.options[name])

    def default_size(self) -> tuple[int, int] | None:
        """The first learned generator's own size, if any is scored."""
        return next(iter(self.sizes.values()), None)

    def build(self, data, size: tuple[int, int], channels: int, device, seed: int, batch: int) -> list[Source]:
        sources = []
        for name in self.args.aug:
            spec = get_spec(name)
            options = self.options[name]
            if spec.learned is None:
                gen = spec.build(BuildRequest(data, self.split.base, device, options, paired_good=False))
                record = {"kind": "classic", "built_from": f"partition {self.split.partition} base set + train/good"}
            else:
                checkpoints, origin = self.trained[name]
                own = self.sizes[name]
                # A learned generator works at its own size (the data is loaded again at that size, still base set +
                # train/good only); its samples are resized to `size` like every other's.
                own_data = data if tuple(own) == tuple(size) else base_only_data(self.index, self.split, own)
                with loading(list(checkpoints.values()), spec.learned.kind):
                    gen = spec.build(BuildRequest(own_data, self.split.base, device, options, paired_good=False,
                                                  checkpoints=lambda wanted, found=checkpoints: found,
                                                  data_for=lambda wanted, found=own_data: found))
                record = {"kind": name, "from": origin, "checkpoints": {d: str(p) for d, p in checkpoints.items()},
                          "resolution": getattr(gen, "resolution", None), **options}
            sources.append(Source(name, record, lambda defect, n, gen=gen, name=name: sample_generator(
                gen, defect, n, size=size, channels=channels, seed=seed, batch=batch, desc=f"{defect}: {name}")))
        return sources


def folder_source(args, split: Split, size, channels: int, warnings: list[str]) -> Source:
    folder = Path(args.images).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: --images folder not found")
    typed = tells_defect_types(folder, split.defects, args.glob)
    if len(split.defects) > 1 and not typed:
        raise InputError(f"{folder}: cannot tell which defect type each image is (no defect_type column in an index, "
                         "no <defect>/ subfolders, or --glob); choose one with --defect")

    def draw(defect: str, n: int):
        try:
            images, masks, how = generated_pairs(folder, defect, args.glob)
        except InputError as err:
            if typed and "no sample of defect type" in str(err):
                warnings.append(f"{folder}: no sample of defect type '{defect}'; left out of that table")
                return None
            raise
        if len(images) < n:
            warnings.append(f"{folder}: only {len(images)} '{defect}' images (asked for {n}); using all")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:n].tolist()
        return load_pairs([images[i] for i in order], [masks[i] for i in order], size, channels)

    return Source(f"images: {folder.name}", {"kind": "folder", "path": str(folder.resolve()), "glob": args.glob}, draw)


def folder_size(args, split: Split) -> tuple[int, int]:
    """(H, W) of the first generated image of the first defect type the --images folder has."""
    error = None
    for defect in split.defects:
        try:
            images, _, _ = generated_pairs(Path(args.images), defect, args.glob)
        except InputError as err:
            error = err
            continue
        return tuple(read_image_array(images[0]).shape[:2])
    raise error
