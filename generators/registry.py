"""Every generator kind by its `--aug` name: the specs registered by `register_generator`.

The built-in packages register themselves when `BUILT_IN` is imported; a package outside this repository
registers through the entry point group `inspect_train.generators` (each entry point names a module, imported
once, whose import registers its specs). `aug_names()` adds the two arms that draw no synthetic sample: `none` (real
only, the baseline) and `classic` (flips, turns and colour jitter on the real images).

Only the base-set images of a partition (and train/good) are handed to a generator, so no test image of the
protocol can reach one.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path

from generators.spec import BuildRequest, GeneratorSpec
from inspect_train.errors import InputError

ENTRY_POINT_GROUP = "inspect_train.generators"
BUILT_IN = ("generators.classic", "generators.dfmgan", "generators.inpaint", "generators.diffusion")
REAL_ONLY = ("none", "classic")

_SPECS: dict[str, GeneratorSpec] = {}
_loaded = False


def register_generator(spec: GeneratorSpec) -> GeneratorSpec:
    """Declare a generator kind (usable as a decorator on a function returning the spec, or called with it)."""
    if callable(spec) and not isinstance(spec, GeneratorSpec):
        spec = spec()
    if spec.name in REAL_ONLY:
        raise ValueError(f"'{spec.name}' is a real-only arm, not a generator name")
    if spec.name in _SPECS and _SPECS[spec.name] is not spec:
        raise ValueError(f"a generator named '{spec.name}' is registered already")
    _SPECS[spec.name] = spec
    return spec


def unregister_generator(name: str) -> None:
    _SPECS.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILT_IN:
        importlib.import_module(f"{module}.spec")
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not take every command down
            print(f"inspect-train: warning: generator plug-in '{entry.name}' ({entry.value}) did not load: {err}")


def specs() -> list[GeneratorSpec]:
    _load()
    return list(_SPECS.values())


def generator_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in specs())


def learned_specs() -> list[GeneratorSpec]:
    return [spec for spec in specs() if spec.learned is not None]


def aug_names() -> tuple[str, ...]:
    """What `--aug` takes: the real-only arms, then every generator."""
    return (*REAL_ONLY, *generator_names())


def get_spec(name: str) -> GeneratorSpec:
    _load()
    if name not in _SPECS:
        raise InputError(f"unknown generator '{name}' (choose from {', '.join(generator_names())})")
    return _SPECS[name]


def spec_for_kind(kind: str | None) -> GeneratorSpec | None:
    """The learned generator whose checkpoints carry this `kind`, if any."""
    return next((s for s in learned_specs() if s.learned.kind == kind), None)


def checkpoint_kinds() -> str:
    """Every learned generator's checkpoint kind, for one error message that says what is accepted."""
    return ", ".join(f"{s.learned.kind} ({s.name})" for s in learned_specs())


def create_generator(name: str, data, base_names: dict[str, list[str]], device="cpu",
                     checkpoints: dict[str, Path] | None = None, **options):
    """A DefectGenerator for `name` built from a category's data and one partition's base set; a learned one
    from `checkpoints` {defect type: checkpoint} (each generator's own options as keyword arguments)."""
    spec = get_spec(name)
    given = None
    if spec.learned is not None:
        if not checkpoints:
            raise InputError(f"the {name} generator needs one checkpoint per defect type ({spec.learned.noun})")
        missing = sorted(set(base_names) - set(checkpoints))
        if missing:
            raise InputError(f"no {name} checkpoint ({spec.learned.noun}) for defect type(s) {missing}")
        given = {t: Path(checkpoints[t]) for t in base_names}
    paired_good = bool(options.pop("paired_good", True))
    request = BuildRequest(data, base_names, device, dict(options), paired_good=paired_good,
                           checkpoints=lambda wanted: given if wanted == name else None, data_for=lambda wanted: data)
    return spec.build(request)
