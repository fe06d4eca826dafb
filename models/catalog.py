"""Loading device models from the shipped catalog or from a file."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from models.errors import ConfigError, read_toml, validate
from models.schema import DeviceModel

CATALOG_PACKAGE = "models"
CATALOG_DIR = "catalog"


def catalog_dir() -> Path:
    """The folder of the shipped catalog."""
    return Path(str(resources.files(CATALOG_PACKAGE).joinpath(CATALOG_DIR)))


def catalog_ids() -> list[str]:
    """Ids of every model in the shipped catalog, sorted."""
    return sorted(p.stem for p in catalog_dir().glob("*.toml"))


def load_path(path: str | Path) -> DeviceModel:
    """Load and validate a model file; errors name the file, the point and the key."""
    data = read_toml(path)
    model = validate(DeviceModel, data, path)
    if Path(path).parent.resolve() == catalog_dir().resolve() and Path(path).stem != model.id:
        raise ConfigError(path, [("id", f"catalog file must be named after its id ({model.id}.toml)")])
    return model


@functools.cache
def _load_catalog(model_id: str) -> DeviceModel:
    path = catalog_dir() / f"{model_id}.toml"
    if not path.is_file():
        known = ", ".join(catalog_ids()) or "none"
        raise ConfigError(path.name, [("", f"no catalog model {model_id!r} (catalog has: {known})")])
    return load_path(path)


def load(ref: str, base: Path | None = None) -> DeviceModel:
    """Load a model by catalog id, or by path when ref names a .toml file.

    Relative paths are taken relative to `base` (the folder of the config naming them).
    """
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        return load_path(path)
    return _load_catalog(ref)


def load_all() -> dict[str, DeviceModel]:
    """Every catalog model by id."""
    return {model_id: _load_catalog(model_id) for model_id in catalog_ids()}
