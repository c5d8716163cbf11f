"""One measured point of the efficiency profiler: (model, L, B, D, device, phase).

Deterministic quantities (`measure_deterministic`), which repeat exactly from run to run:
- `params`: the number of trainable and frozen parameters;
- `flops`: FLOPs counted by `bench.flops` over one step;
- `saved_bytes`: bytes of the tensors autograd saves for backward during one training forward;
- `peak_live_bytes`: the peak of bytes held by live tensors created during one step. That covers
  activations, autograd temporaries, gradients and the optimiser state, but not parameters,
  buffers or the batch, which exist before the step (see `LiveBytesTracker`).

Wall time (`time_point`) is measured separately, because a step run under the counting modes is
slower than a plain one.

A training step is forward, backward and one AdamW step, starting from a fresh model with no
gradients and an empty optimiser state. An inference step scores C candidates under
`torch.no_grad`. Every profile is full (no padding), so each of the L positions contains an
item.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.flops import flop_counter
from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.data.schema import synthetic_meta
from convrec.errors import ConvbenchError
from convrec.models.base import SequentialRecommender
from convrec.models.registry import get_model_class
from convrec.provenance import provenance  # noqa: F401  (re-exported for the sweep and gate)

logger = logging.getLogger(__name__)

Phase = Literal["train", "infer"]
PHASES: tuple[str, ...] = ("train", "infer")

# Synthetic dataset sizes used when the caller gives none: MovieLens-100K's item count, its
# 19 genres plus the release year as attributes, and the 6 calendar context features.
DEFAULT_NUM_ITEMS = 1682
DEFAULT_ATTRIBUTE_WIDTH = 20
DEFAULT_CONTEXT_WIDTH = 6

# Fixed seed of model initialisation, batch contents and dropout masks.
MEASURE_SEED = 0

# Config fields that set the hidden width D; the first one a model's config has is used.
_HIDDEN_SIZE_FIELDS = ("hidden_size", "hidden_units", "embedding_dim", "d_model")

# Head-count changes already logged, so that a sweep logs each one once.
_reported_head_changes: set[tuple[str, int, int, int]] = set()


# --- building a model and a batch -------------------------------------------------------------


def size_overrides(model_name: str, *, seq_len: int, hidden_size: int) -> dict[str, Any]:
    """Return the config fields that give `model_name` max_len L and hidden width D.

    Every other field keeps the model's documented default. The one exception: when the default
    head count does not divide D (CARCA's 3 heads and D = 64), the largest divisor of D below it
    is used, and the change is logged once. The profiler and the accuracy runs of `scale` both
    build their models from these fields, so accuracy and cost describe the same model.
    """
    cls = get_model_class(model_name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
    hidden_field = next((name for name in _HIDDEN_SIZE_FIELDS if name in defaults), None)
    if hidden_field is None or "max_len" not in defaults:
        raise ConvbenchError(
            f"the config of model {model_name!r} has no max_len or hidden width field "
            f"(looked for {', '.join(_HIDDEN_SIZE_FIELDS)}); add one to "
            f"{cls.config_class.__name__} so the profiler can set L and D"
        )

    overrides: dict[str, Any] = {"max_len": seq_len, hidden_field: hidden_size}
    heads = defaults.get("num_heads")
    if isinstance(heads, int) and heads > 0 and hidden_size % heads != 0:
        overrides["num_heads"] = max(h for h in range(1, heads + 1) if hidden_size % h == 0)
        change = (model_name, heads, hidden_size, overrides["num_heads"])
        if change not in _reported_head_changes:
            _reported_head_changes.add(change)
            logger.info("%s: %d heads do not divide D=%d; using %d heads", *change)
    return overrides


def build_profiled_model(model_name: str, *, seq_len: int, hidden_size: int,
                         num_items: int = DEFAULT_NUM_ITEMS,
                         attribute_width: int = DEFAULT_ATTRIBUTE_WIDTH,
                         context_width: int = DEFAULT_CONTEXT_WIDTH,
                         device: str | torch.device = "cpu") -> SequentialRecommender:
    """Build `model_name` for a synthetic dataset, with max_len L and hidden width D.

    The config comes from `size_overrides`: the model's documented defaults, dropout included,
    so the measured step costs what a real training step costs.
    """
    cls = get_model_class(model_name)
    overrides = size_overrides(model_name, seq_len=seq_len, hidden_size=hidden_size)
    config = cls.config_class(**overrides)
    meta = synthetic_meta(num_items=num_items, attribute_width=attribute_width,
                          context_width=context_width, seed=MEASURE_SEED)
    model = cls(config, meta)
    # Models are built on the CPU. Skipping the no-op move keeps this usable under
    # FakeTensorMode, where `Module.to` cannot swap fake parameters.
    if torch.device(device) != torch.device("cpu"):
        model = model.to(device)
    return model


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def make_batch(model: SequentialRecommender, *, batch_size: int, seq_len: int,
               num_candidates: int = 101, seed: int = 0,
               phase: Phase = "train") -> ScoringBatch | PositionBatch:
    """Build a random batch of full-length profiles on the model's device.

    Training batches follow `model.training_mode`: "prefix" models get a ScoringBatch of C
    candidates (column 0 is the positive), "positions" models a PositionBatch. Inference always
    gets a ScoringBatch of C candidates. Item ids are uniform in 1..N and context features uniform
    in [0, 1). Values matter for the cost only where a model works per distinct item (ConvRec's
    item encoder), and `seed` fixes them.
    """
    _check_phase(phase)
    B, L, C = batch_size, seq_len, num_candidates
    N = model.meta.num_items
    X = model.meta.context_width
    device = _model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)

    def items(*shape: int) -> torch.Tensor:
        return torch.randint(1, N + 1, shape, generator=generator, device=device)

    def context(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, X, generator=generator, device=device)

    users = torch.arange(1, B + 1, device=device)
    if phase == "train" and model.training_mode == "positions":
        return PositionBatch(
            users=users,
            profile_items=items(B, L),
            profile_context=context(B, L),
            positive_items=items(B, L),
            negative_items=items(B, L),
            target_context=context(B, L),
        )
    return ScoringBatch(
        users=users,
        profile_items=items(B, L),
        profile_context=context(B, L),
        candidate_items=items(B, C),
        candidate_context=context(B),
    )


def make_optimizer(model: SequentialRecommender) -> torch.optim.Optimizer:
    """Return the AdamW optimiser the trainer uses, with the model's own settings.

    `foreach=False` keeps the per-parameter loop on every device, so the measured memory does not
    depend on whether torch picks the multi-tensor path (it does on CUDA by default).
    """
    config = model.config
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                             weight_decay=config.weight_decay, betas=tuple(config.adam_betas),
                             foreach=False)


def run_step(model: SequentialRecommender, batch: ScoringBatch | PositionBatch, phase: Phase,
             optimizer: torch.optim.Optimizer | None = None,
             forward_context: Callable[[], Any] | None = None) -> None:
    """Run one training step (forward, backward, optimiser) or one inference step.

    `forward_context`, when given, is a context manager factory entered around the forward only.
    """
    _check_phase(phase)
    if phase == "train":
        if optimizer is None:
            raise ConvbenchError("a training step needs an optimiser; pass make_optimizer(model)")
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with forward_context() if forward_context is not None else _nothing():
            loss = model.loss(batch)
        loss.backward()
        optimizer.step()
    else:
        model.eval()
        with torch.no_grad(), forward_context() if forward_context is not None else _nothing():
            model.score(batch)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ConvbenchError(f"unknown phase {phase!r}; valid phases are: {', '.join(PHASES)}")


# --- counting bytes ---------------------------------------------------------------------------


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    return [leaf.untyped_storage() for leaf in tree_leaves(tree)
            if isinstance(leaf, torch.Tensor)]


_LIFT_FRESH = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default)


class LiveBytesTracker(TorchDispatchMode):
    """Dispatch mode that tracks the bytes of live storages created by operators, and their peak.

    A storage is counted once, at its size after the operator that created it, when it is an
    output of an operator and is neither one of that operator's inputs nor already counted. It
    stops counting when it is freed (a weakref finalizer on the storage). So views and in-place
    results are not counted twice, and storages that existed before the mode was entered
    (parameters, buffers, the batch, an optimiser state from an earlier step) are not counted.

    Not seen: workspace a kernel allocates and frees internally (the CPU flash attention's
    per-thread buffers, for example), allocator rounding and fragmentation, and Python objects.
    Frees are deterministic only while the cyclic garbage collector is off, which
    `track_live_bytes` ensures.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, int] = {}  # id of the storage object -> its counted bytes

    def _release(self, key: int) -> None:
        self.live_bytes -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        outputs = func(*args, **kwargs)

        # torch keeps one Python object per storage while the storage lives, so its id is a
        # stable key until the finalizer below removes it. `torch.tensor(...)` builds its tensor
        # outside the dispatcher and hands it to `lift_fresh`, so that input is new as well.
        if func in _LIFT_FRESH:
            input_keys = set()
        else:
            input_keys = {id(storage) for storage in _storages((args, kwargs))}
        for storage in _storages(outputs):
            key = id(storage)
            nbytes = storage.nbytes()
            if key in self._live:
                # A counted storage resized in place by this operator.
                self.live_bytes += nbytes - self._live[key]
                self._live[key] = nbytes
                continue
            if key in input_keys:
                continue
            self._live[key] = nbytes
            self.live_bytes += nbytes
            weakref.finalize(storage, self._release, key).atexit = False

        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return outputs


@contextmanager
def _collector_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def track_live_bytes() -> Iterator[LiveBytesTracker]:
    """Track live bytes of the storages created inside the block, with the collector paused."""
    with _collector_paused(), LiveBytesTracker() as tracker:
        yield tracker


class SavedBytesCounter:
    """Counts the bytes of tensors autograd saves for backward, each storage once.

    Storages listed in `exclude` (parameters, buffers and the batch, which exist whether or not
    a backward follows) are not counted. The counter keeps every counted storage alive until the
    block ends; autograd keeps them alive until backward anyway.
    """

    def __init__(self, exclude: list[torch.UntypedStorage]):
        self.saved_bytes = 0
        self._excluded = {id(storage) for storage in exclude}
        self._seen: dict[int, torch.UntypedStorage] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key not in self._excluded and key not in self._seen:
            self._seen[key] = storage
            self.saved_bytes += storage.nbytes()
        return tensor

    @contextmanager
    def counting(self) -> Iterator[SavedBytesCounter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self
        self._seen.clear()


def existing_storages(model: torch.nn.Module, batch: ScoringBatch | PositionBatch
                      ) -> list[torch.UntypedStorage]:
    """Return the storages of the model's parameters and buffers and of the batch's tensors."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [value for value in vars(batch).values() if isinstance(value, torch.Tensor)]
    return [tensor.untyped_storage() for tensor in tensors]


def profile_step(model: SequentialRecommender, batch: ScoringBatch | PositionBatch, *,
                 phase: Phase) -> dict[str, int]:
    """Run one step under the counters; return params, flops, saved_bytes and peak_live_bytes.

    The model must be fresh (no gradients, no optimiser state), so that a training step counts
    the gradients and AdamW's two moment buffers among the bytes it creates.
    """
    optimizer = make_optimizer(model) if phase == "train" else None
    saved = SavedBytesCounter(exclude=existing_storages(model, batch))
    forward_context = saved.counting if phase == "train" else None

    with flop_counter() as flops, track_live_bytes() as live:
        run_step(model, batch, phase, optimizer, forward_context=forward_context)

    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops": int(flops.get_total_flops()),
        "saved_bytes": saved.saved_bytes,
        "peak_live_bytes": live.peak_bytes,
    }


# --- measured points --------------------------------------------------------------------------


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside the block and restore the caller's random state afterwards."""
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def _point(model_name: str, seq_len: int, batch_size: int, hidden_size: int, phase: str,
           num_candidates: int, device: torch.device) -> dict[str, Any]:
    return {"model": model_name, "seq_len": seq_len, "batch_size": batch_size,
            "hidden_size": hidden_size, "phase": phase, "num_candidates": num_candidates,
            "device": str(device)}


def measure_deterministic(model_name: str, *, seq_len: int, batch_size: int, hidden_size: int,
                          phase: Phase, num_candidates: int = 101,
                          device: str | torch.device = "cpu",
                          num_items: int = DEFAULT_NUM_ITEMS,
                          attribute_width: int = DEFAULT_ATTRIBUTE_WIDTH,
                          context_width: int = DEFAULT_CONTEXT_WIDTH) -> dict[str, Any]:
    """Measure params, flops, saved_bytes and peak_live_bytes of one step of a fresh model.

    Returns the point's description (model, seq_len, batch_size, hidden_size, phase,
    num_candidates, device) plus the four quantities. saved_bytes is 0 for inference. The seed is
    fixed, so two calls give the same numbers. The thread count is left to the caller.
    NOTE: the CUDA path (device="cuda") counts bytes the same way but has not been run by the
    tests, which run on CPU.
    """
    _check_phase(phase)
    device = torch.device(device)
    with _seeded(MEASURE_SEED, device):
        model = build_profiled_model(model_name, seq_len=seq_len, hidden_size=hidden_size,
                                     num_items=num_items, attribute_width=attribute_width,
                                     context_width=context_width, device=device)
        batch = make_batch(model, batch_size=batch_size, seq_len=seq_len,
                           num_candidates=num_candidates, seed=MEASURE_SEED, phase=phase)
        quantities = profile_step(model, batch, phase=phase)

    logger.debug("measured %s L=%d B=%d D=%d %s: %s", model_name, seq_len, batch_size,
                 hidden_size, phase, quantities)
    return {**_point(model_name, seq_len, batch_size, hidden_size, phase, num_candidates, device),
            **quantities}


def summarize_times(times: list[float]) -> dict[str, float]:
    """Return the median, interquartile range, minimum and maximum of `times`, in seconds.

    The quartiles are those of `statistics.quantiles` with the "inclusive" method (linear
    interpolation between order statistics, as numpy's default percentile).
    """
    if not times:
        raise ValueError("no timed repetitions to summarize")
    if len(times) == 1:
        q1 = q3 = times[0]
    else:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"time_median_s": statistics.median(times), "time_iqr_s": q3 - q1,
            "time_min_s": min(times), "time_max_s": max(times)}


def time_point(model_name: str, *, seq_len: int, batch_size: int, hidden_size: int,
               phase: Phase, num_candidates: int = 101, device: str | torch.device = "cpu",
               warmup: int = 2, repeats: int = 5,
               num_items: int = DEFAULT_NUM_ITEMS,
               attribute_width: int = DEFAULT_ATTRIBUTE_WIDTH,
               context_width: int = DEFAULT_CONTEXT_WIDTH) -> dict[str, Any]:
    """Time `repeats` steps after `warmup` untimed ones; return the point and time statistics.

    Each timed region is one step. On CUDA the device is synchronised just before and just after
    it, and nowhere inside, so queued kernels count towards the step that launched them.
    """
    _check_phase(phase)
    if warmup < 0 or repeats < 1:
        raise ConvbenchError(f"invalid timing: warmup={warmup}, repeats={repeats}; "
                             "use warmup >= 0 and repeats >= 1")
    device = torch.device(device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[float] = []
    with _seeded(MEASURE_SEED, device):
        model = build_profiled_model(model_name, seq_len=seq_len, hidden_size=hidden_size,
                                     num_items=num_items, attribute_width=attribute_width,
                                     context_width=context_width, device=device)
        batch = make_batch(model, batch_size=batch_size, seq_len=seq_len,
                           num_candidates=num_candidates, seed=MEASURE_SEED, phase=phase)
        optimizer = make_optimizer(model) if phase == "train" else None

        for _ in range(warmup):
            run_step(model, batch, phase, optimizer)
        for _ in range(repeats):
            synchronize()
            start = time.perf_counter()
            run_step(model, batch, phase, optimizer)
            synchronize()
            times.append(time.perf_counter() - start)

    logger.debug("timed %s L=%d B=%d %s: %s", model_name, seq_len, batch_size, phase, times)
    return {**_point(model_name, seq_len, batch_size, hidden_size, phase, num_candidates, device),
            **summarize_times(times), "repeats": repeats, "warmup": warmup}
