"""Name registry of models: turns `convrec`, `sasrec` or `carca` into a class.

Classes are imported lazily so that `convrec` does not import `baselines` at start-up.
"""

from __future__ import annotations

import dataclasses
import importlib

from convrec.data.schema import DatasetMeta
from convrec.errors import ConvbenchError
from convrec.models.base import SequentialRecommender

_MODELS: dict[str, str] = {
    "convrec": "convrec.models.convrec:ConvRec",
    "sasrec": "baselines.sasrec:SASRec",
    "carca": "baselines.carca:CARCA",
}


def model_names() -> list[str]:
    return list(_MODELS)


def get_model_class(name: str) -> type[SequentialRecommender]:
    """Return the model class registered as `name` (case-insensitive)."""
    key = name.strip().lower()
    if key not in _MODELS:
        valid = ", ".join(_MODELS)
        raise ConvbenchError(f"unknown model {name!r}; valid models are: {valid}")
    module_name, class_name = _MODELS[key].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(name: str, meta: DatasetMeta, **overrides) -> SequentialRecommender:
    """Build model `name` for `meta`, with config fields replaced by `overrides`."""
    cls = get_model_class(name)
    valid = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConvbenchError(
            f"unknown setting(s) {', '.join(unknown)} for model {name!r}; "
            f"valid settings are: {', '.join(sorted(valid))}"
        )
    config = cls.config_class(**overrides)
    return cls(config, meta)
