"""Deterministic quantities of a point computed on fake tensors, without allocating them.

`estimate_point` runs the same step as `bench.measure.measure_deterministic`, through the same
counters, under `FakeTensorMode`: every parameter, batch tensor and activation carries its shape,
dtype and strides but no data. So a point that would need gigabytes (SASRec at L = 4096, B = 128)
is estimated in seconds on any machine, and the sweep can skip points that will not fit.

Some shapes depend on values: ConvRec encodes each distinct item of a batch once
(`torch.unique`). So the batch is built for real, and `IntegerShadowMode` keeps real copies of
its integer tensors (item ids) and of the integer and boolean tensors computed from them. Those
copies cost memory of the order of the batch. An operator whose output shape depends on values
runs on the real copies. With that, the estimate equals a real CPU measurement, because the same
operators produce storages of the same sizes and free them in the same order. An operator that
needs the values of a float tensor, or of an integer tensor larger than MAX_SHADOW_ELEMENTS,
still cannot be estimated and raises a ConvbenchError.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    unset_fake_temporarily,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.weak import WeakTensorKeyDictionary

from bench.measure import (
    DEFAULT_ATTRIBUTE_WIDTH,
    DEFAULT_CONTEXT_WIDTH,
    DEFAULT_NUM_ITEMS,
    MEASURE_SEED,
    Phase,
    build_profiled_model,
    make_batch,
    profile_step,
)
from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.errors import ConvbenchError

logger = logging.getLogger(__name__)

# Integer and boolean results larger than this (128 MiB of int64) get no real copy, so an
# L x L mask at large L stays fake. An operator that needs the values of such a tensor fails.
MAX_SHADOW_ELEMENTS = 2**24

_VALUE_DEPENDENT_ERRORS = (DynamicOutputShapeException, DataDependentOutputException)


def _is_shadowed_dtype(tensor: torch.Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex())


class IntegerShadowMode(TorchDispatchMode):
    """Dispatch mode, entered above a FakeTensorMode, that keeps real copies of integer tensors.

    `shadows` maps a fake tensor to its real copy. An operator whose tensor inputs all have one
    runs on the fake tensors, and again on the real copies when every output is an integer or
    boolean tensor of at most MAX_SHADOW_ELEMENTS elements. When the fake run fails because the
    output shape depends on values, the real run decides, and its outputs are made fake.
    """

    def __init__(self, fake_mode: FakeTensorMode):
        super().__init__()
        self.fake_mode = fake_mode
        self.shadows = WeakTensorKeyDictionary()

    def fake(self, real: torch.Tensor) -> torch.Tensor:
        """Return a fake copy of a real tensor, remembering its values if it is an integer one."""
        fake = self.fake_mode.from_tensor(real)
        if _is_shadowed_dtype(real):
            self.shadows[fake] = real
        return fake

    def _real_arguments(self, args, kwargs):
        flat, spec = tree_flatten((args, kwargs))
        real = []
        for leaf in flat:
            if isinstance(leaf, torch.Tensor):
                if leaf not in self.shadows:
                    return None
                leaf = self.shadows[leaf]
            real.append(leaf)
        return tree_unflatten(real, spec)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        real_arguments = self._real_arguments(args, kwargs)

        try:
            outputs = func(*args, **kwargs)
        except _VALUE_DEPENDENT_ERRORS:
            if real_arguments is None:
                raise
            with unset_fake_temporarily():
                real_outputs = func(*real_arguments[0], **real_arguments[1])
            return tree_map(lambda value: self.fake(value) if isinstance(value, torch.Tensor)
                            else value, real_outputs)

        output_tensors = [value for value in tree_flatten(outputs)[0]
                          if isinstance(value, torch.Tensor)]
        worth_shadowing = real_arguments is not None and all(
            _is_shadowed_dtype(value) and value.numel() <= MAX_SHADOW_ELEMENTS
            for value in output_tensors
        )
        if worth_shadowing and output_tensors:
            with unset_fake_temporarily():
                real_outputs = func(*real_arguments[0], **real_arguments[1])
            real_tensors = [value for value in tree_flatten(real_outputs)[0]
                            if isinstance(value, torch.Tensor)]
            for fake, real in zip(output_tensors, real_tensors, strict=True):
                self.shadows[fake] = real
        return outputs


def _fake_batch(batch: ScoringBatch | PositionBatch, shadow: IntegerShadowMode
                ) -> ScoringBatch | PositionBatch:
    values = {name: shadow.fake(value) if isinstance(value, torch.Tensor) else value
              for name, value in vars(batch).items()}
    return type(batch)(**values)


def estimate_point(model_name: str, *, seq_len: int, batch_size: int, hidden_size: int,
                   phase: Phase, num_candidates: int = 101,
                   num_items: int = DEFAULT_NUM_ITEMS,
                   attribute_width: int = DEFAULT_ATTRIBUTE_WIDTH,
                   context_width: int = DEFAULT_CONTEXT_WIDTH) -> dict[str, Any]:
    """Estimate params, flops, saved_bytes and peak_live_bytes of one CPU step on fake tensors.

    Returns the same keys as `measure_deterministic`, with `device` "cpu" and `estimated` True.
    Real memory use is that of the batch (its item ids and contexts) plus the dataset's
    attribute table, whatever L and D are.
    """
    # Models may register real tensors made from the dataset's numpy arrays (the attribute
    # table). allow_non_fake_inputs turns them into fake ones when an operator first uses them.
    with FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
        model = build_profiled_model(model_name, seq_len=seq_len, hidden_size=hidden_size,
                                     num_items=num_items, attribute_width=attribute_width,
                                     context_width=context_width, device="cpu")
        with unset_fake_temporarily():
            real_batch = make_batch(model, batch_size=batch_size, seq_len=seq_len,
                                    num_candidates=num_candidates, seed=MEASURE_SEED,
                                    phase=phase)

        with IntegerShadowMode(fake_mode) as shadow:
            batch = _fake_batch(real_batch, shadow)
            try:
                quantities = profile_step(model, batch, phase=phase)
            except _VALUE_DEPENDENT_ERRORS as error:
                raise ConvbenchError(
                    f"model {model_name!r} runs an operator whose output depends on the values "
                    f"of a float or large tensor ({error}), so its {phase} step cannot be "
                    "estimated on fake tensors; measure the point with "
                    "bench.measure.measure_deterministic instead"
                ) from error

    logger.debug("estimated %s L=%d B=%d D=%d %s: %s", model_name, seq_len, batch_size,
                 hidden_size, phase, quantities)
    return {"model": model_name, "seq_len": seq_len, "batch_size": batch_size,
            "hidden_size": hidden_size, "phase": phase, "num_candidates": num_candidates,
            "device": "cpu", **quantities, "estimated": True}
