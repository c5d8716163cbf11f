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
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
    checked = {key: _checked_value(name, key, value, defaults[key])
               for key, value in overrides.items()}
    config = cls.config_class(**checked)
    return cls(config, meta)


def _checked_value(model: str, key: str, value, default):
    """Return `value` converted to the type of the field's default, or raise naming both."""
    if isinstance(default, bool):
        expected = "true or false"
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        expected = "an integer"
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        expected = "a number"
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        # Tuples and optional fields (schedules, betas) are checked by the config itself.
        return value
    if not ok:
        raise ConvbenchError(
            f"invalid value {value!r} for setting {key!r} of model {model!r}: expected {expected}"
        )
    return value
