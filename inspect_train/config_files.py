"""Find and read the YAML presets in configs/: by name ('segment-tiny') or by path.

One reader for every command, so a missing preset or broken YAML reads the
same everywhere: one line naming the file and listing the presets that exist.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from inspect_train.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def read_preset(name_or_path: str, family: str) -> tuple[dict, Path]:
    """'<family>-x' -> configs/<family>-x.yaml, or a YAML path; returns the mapping (empty file: {}) and its path."""
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{text}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob(f"{family}-*.yaml"))
        raise InputError(f"{name_or_path}: {family} config not found (known: {', '.join(known)})")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: a {family} config must be a mapping")
    return config, path


def read_required_preset(name_or_path: str, family: str, required: tuple[str, ...]) -> tuple[dict, Path]:
    """read_preset, then refuse a file missing any `required` key; `name` defaults to the file's stem."""
    config, path = read_preset(name_or_path, family)
    missing = [k for k in required if k not in config]
    if missing:
        raise InputError(f"{path}: missing keys {', '.join(missing)}")
    config["name"] = config.get("name") or path.stem
    return config, path
