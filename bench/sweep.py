"""The efficiency sweep: every (model, L, B, D, device, phase) point, one process each.

Points are measured series by series: a series fixes model, phase, B, D and device, and runs L
upwards. Before each length, the costs measured at the smaller lengths of the series are
extrapolated with their fitted exponent. When the next length is predicted to exceed the time or
memory budget, it is skipped, and so is every larger length of the series. After an "oom" or
"timeout" the larger lengths are skipped as well. Every skipped, oom or timeout point also gets an
"estimated" row from `estimate_point` (FLOPs and bytes computed on fake tensors), so that no point
of the grid is missing from the table. The smallest and largest measured length of each series
get one too, to check the estimate against measurement.

The table lives in `points.csv` in the output directory and is rewritten atomically after every
point, so an interruption loses at most the point that was running. On resume, points whose
measure row is measured, oom or timeout are kept; skipped and error rows are decided again,
because the budgets or the code may have changed since.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from bench.fit import fit_exponent
from bench.point import PHASES, PointSpec, run_point
from convrec.errors import ConvbenchError
from convrec.models.registry import get_model_class

logger = logging.getLogger(__name__)

POINTS_FILE = "points.csv"
ACCURACY_FILE = "accuracy.csv"
KEY_COLUMNS = ("model", "phase", "seq_len", "batch_size", "hidden_size", "device")
ACCURACY_KEY_COLUMNS = ("model", "dataset", "seq_len", "hidden_size", "max_epochs", "seed")
_INTEGER_KEYS = {"seq_len", "batch_size", "hidden_size", "max_epochs", "seed"}

# Column order of points.csv; provenance (prov_*) and any other column follow in sorted order.
POINT_COLUMNS = (
    *KEY_COLUMNS, "method", "status", "reason", "num_candidates", "warmup", "repeats",
    "time_median_s", "time_iqr_s", "time_min_s", "time_max_s",
    "params", "flops", "saved_bytes", "peak_live_bytes",
    "peak_rss_bytes", "base_rss_bytes", "rss_growth_bytes", "cuda_peak_bytes",
    "process_seconds", "measure_seconds",
)

# Measure-row statuses that a resumed sweep keeps instead of measuring again.
FINAL_STATUSES = ("measured", "oom", "timeout")

# Extrapolation uses at most this many of the largest measured lengths of a series, since the
# local slope predicts the next doubling better than a slope flattened by fixed costs at small L.
_PREDICTION_POINTS = 3
# The fitted exponent is clamped to this range before extrapolating. Noise in the small costs of
# short sequences can give a wild slope, and no model here grows faster than L^2 (attention),
# so 3 leaves headroom without letting one noisy pair skip a whole series.
_SLOPE_RANGE = (0.0, 3.0)


def default_lengths(min_len: int = 16, max_len: int = 4096) -> list[int]:
    """Return min_len, 2*min_len, 4*min_len, ... up to max_len, with max_len itself last."""
    if min_len < 1 or max_len < min_len:
        raise ConvbenchError(f"invalid length range {min_len}..{max_len}; "
                             f"need 1 <= min-len <= max-len")
    lengths = []
    length = min_len
    while length <= max_len:
        lengths.append(length)
        length *= 2
    if lengths[-1] != max_len:
        lengths.append(max_len)
    return lengths


def default_devices() -> list[str]:
    """Return ["cpu"], plus "cuda" when `torch.cuda.is_available()`."""
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


def validate_devices(devices: Sequence[str]) -> list[str]:
    """Check that each device is `cpu`, `cuda` or `cuda:N` and usable here; return them.

    Names are lowercased, stripped and deduplicated, keeping their order. Raises ConvbenchError
    naming the device for any other name, for CUDA when `torch.cuda.is_available()` is false,
    and for an index N that is not below `torch.cuda.device_count()`.
    """
    valid = []
    for device in devices:
        name = str(device).strip().lower()
        match = _CUDA_DEVICE.fullmatch(name)
        if name != "cpu" and match is None:
            raise ConvbenchError(f"invalid device {device!r}; valid devices are cpu, cuda and "
                                 f"cuda:N, where N is a GPU index")
        if match is not None:
            name = _check_cuda_device(name, match.group(1))
        if name not in valid:
            valid.append(name)
    return valid


def _check_cuda_device(name: str, index: str | None) -> str:
    """Return `name` with its index as a plain integer; raise when torch cannot use it."""
    import torch

    if not torch.cuda.is_available():
        raise ConvbenchError(f"device {name!r} requested, but torch.cuda.is_available() is "
                             f"false here; install a CUDA build of torch or use cpu")
    if index is None:
        return name
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise ConvbenchError(f"invalid device {name!r}: torch sees {count} GPU(s), so the "
                             f"index must be below {count}")
    return f"cuda:{int(index)}"


class ResultTable:
    """A CSV of rows keyed by some columns, rewritten atomically after every change.

    A row added with the key of an existing row (plus `method`, where the table has one)
    replaces it.
    """

    def __init__(self, path: Path, key_columns: Sequence[str], column_order: Sequence[str] = (),
                 resume: bool = True):
        self.path = Path(path)
        self.key_columns = tuple(key_columns)
        self.column_order = tuple(column_order)
        self.rows: list[dict] = []
        if resume and self.path.exists():
            frame = pd.read_csv(self.path)
            frame = frame.astype(object).where(frame.notna(), None)
            self.rows = frame.to_dict("records")
            logger.info("resuming from %s (%d rows)", self.path, len(self.rows))

    def _key(self, row: dict) -> tuple:
        key = []
        for column in self.key_columns:
            value = row.get(column)
            integer = column in _INTEGER_KEYS and value is not None and not pd.isna(value)
            key.append(int(value) if integer else str(value))
        return (*key, row.get("method"))

    def find(self, row: dict) -> dict | None:
        key = self._key(row)
        for existing in self.rows:
            if self._key(existing) == key:
                return existing
        return None

    def add(self, row: dict) -> None:
        key = self._key(row)
        self.rows = [existing for existing in self.rows if self._key(existing) != key]
        self.rows.append(dict(row))
        self.save()

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        if frame.empty:
            return pd.DataFrame(columns=list(self.column_order or self.key_columns))
        first = [column for column in self.column_order if column in frame.columns]
        rest = sorted(column for column in frame.columns if column not in first)
        return frame[first + rest]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        self.frame().to_csv(temporary, index=False)
        os.replace(temporary, self.path)


def run_sweep(
    *,
    models: Sequence[str],
    lengths: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32, 128),
    phases: Sequence[str] = PHASES,
    devices: Sequence[str] | None = None,
    hidden_size: int = 64,
    output_dir: Path,
    time_budget_s: float,
    memory_budget_bytes: int,
    num_candidates: int = 101,
    warmup: int = 2,
    repeats: int = 5,
    resume: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure every point of the grid that is not yet in `output_dir/points.csv`.

    Returns the whole table (measure and estimate rows). `devices` defaults to CPU plus CUDA where
    available. Raises ConvbenchError, before any point runs, for an unknown phase or model, an
    invalid device (see `validate_devices`) or an empty grid.
    """
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise ConvbenchError(f"unknown phase(s) {', '.join(unknown)}; "
                             f"valid phases are: {', '.join(PHASES)}")
    for model in models:
        get_model_class(model)  # rejects an unknown name with the list of valid ones
    devices = validate_devices(devices) if devices is not None else default_devices()
    lengths = sorted(set(int(length) for length in lengths))
    if not (models and lengths and batch_sizes and phases and devices):
        raise ConvbenchError("the sweep grid is empty; give at least one model, length, batch "
                             "size, phase and device")

    table = ResultTable(Path(output_dir) / POINTS_FILE, KEY_COLUMNS, POINT_COLUMNS,
                        resume=resume)
    series = [(model, phase, batch_size, device)
              for device in devices
              for batch_size in batch_sizes
              for phase in phases
              for model in models]
    logger.info("sweep of %d points (%d series x %d lengths), D=%d, budgets %g s and %d B "
                "per point, writing %s", len(series) * len(lengths), len(series), len(lengths),
                hidden_size, time_budget_s, memory_budget_bytes, table.path)

    with tqdm(total=len(series) * len(lengths), desc="scale", unit="point",
              disable=not progress) as bar:
        for model, phase, batch_size, device in series:
            specs = [PointSpec(model=model, seq_len=length, batch_size=batch_size,
                               hidden_size=hidden_size, phase=phase, device=device,
                               num_candidates=num_candidates, warmup=warmup,
                               repeats=repeats)
                     for length in lengths]
            _run_series(table, specs, time_budget_s=time_budget_s,
                        memory_budget_bytes=memory_budget_bytes, bar=bar)

    frame = table.frame()
    counts = frame.groupby("status").size().to_dict() if not frame.empty else {}
    logger.info("sweep finished: %s", ", ".join(f"{n} {status}" for status, n in counts.items()))
    return frame


def _run_series(table: ResultTable, specs: list[PointSpec], *, time_budget_s: float,
                memory_budget_bytes: int, bar: tqdm) -> None:
    """Run the lengths of one series upwards, skipping those predicted or known not to fit."""
    skip_reason: str | None = None
    for spec in specs:
        bar.set_postfix_str(spec.describe(), refresh=False)
        existing = table.find({**asdict(spec), "method": "measure"})
        if existing is not None and existing["status"] in FINAL_STATUSES:
            if existing["status"] != "measured" and skip_reason is None:
                skip_reason = f"the smaller L={spec.seq_len} ended with {existing['status']}"
            _add_estimate_if_missing(table, spec, reason=f"stands in for {existing['status']}")
            bar.update(1)
            continue

        if skip_reason is None:
            skip_reason = predict_over_budget(_measured_rows(table, spec), spec.seq_len,
                                              time_budget_s=time_budget_s,
                                              memory_budget_bytes=memory_budget_bytes,
                                              on_cuda=spec.device.startswith("cuda"))
        if skip_reason is not None:
            row = {**asdict(spec), "method": "measure", "status": "skipped",
                   "reason": skip_reason}
            logger.info("skipping %s: %s", spec.describe(), skip_reason)
        else:
            row = run_point(spec, time_budget_s=time_budget_s,
                            memory_budget_bytes=memory_budget_bytes)
            if row["status"] in ("oom", "timeout"):
                logger.warning("%s: %s (%s); larger lengths of this series are skipped",
                               spec.describe(), row["status"], row["reason"])
                skip_reason = f"the smaller L={spec.seq_len} ended with {row['status']}"
            elif row["status"] == "error":
                logger.error("%s failed: %s", spec.describe(), row["reason"])
        table.add(row)

        if row["status"] in ("skipped", "oom", "timeout"):
            _add_estimate_if_missing(table, spec, reason=f"stands in for {row['status']}")
        bar.update(1)

    # Check the estimate against measurement at both ends of the measured range. A resumed table
    # may hold lengths that this run does not request, so only requested lengths count.
    specs_by_length = {spec.seq_len: spec for spec in specs}
    measured = sorted(int(row["seq_len"]) for row in _measured_rows(table, specs[-1],
                                                                     below=math.inf)
                      if int(row["seq_len"]) in specs_by_length)
    for length in sorted({measured[0], measured[-1]}) if measured else []:
        _add_estimate_if_missing(table, specs_by_length[length],
                                 reason="checks the estimate against measurement")


def _measured_rows(table: ResultTable, spec: PointSpec, below: float | None = None) -> list[dict]:
    """Return the measured rows of `spec`'s series with L below `below` (default spec's L)."""
    limit = spec.seq_len if below is None else below
    series_key = (spec.model, spec.phase, spec.batch_size, spec.hidden_size, spec.device)
    rows = []
    for row in table.rows:
        key = (row["model"], row["phase"], int(row["batch_size"]), int(row["hidden_size"]),
               row["device"])
        if (key == series_key and row.get("method") == "measure"
                and row.get("status") == "measured" and int(row["seq_len"]) < limit):
            rows.append(row)
    return sorted(rows, key=lambda row: int(row["seq_len"]))


def predict_over_budget(measured: Sequence[dict], length: int, *, time_budget_s: float,
                        memory_budget_bytes: int, on_cuda: bool = False) -> str | None:
    """Return why `length` is predicted to exceed a budget, or None when it should fit.

    `measured` are measured rows of one series at smaller lengths. Each cost is split into a
    fixed part (process start-up, resident memory before measuring) and a part that grows with
    L. Only the growing part is extrapolated, as part(L_last) * (L / L_last)^slope, with the
    slope fitted over the largest measured lengths. Fewer than two measured lengths predict
    nothing.
    """
    rows = list(measured)[-_PREDICTION_POINTS:]
    if len(rows) < 2:
        return None

    last = rows[-1]
    fixed_time = _number(last, "process_seconds") - _number(last, "measure_seconds")
    time_prediction = _extrapolate(rows, "measure_seconds", length)
    if time_prediction is not None:
        predicted = max(fixed_time, 0.0) + time_prediction[0]
        if predicted > time_budget_s:
            return (f"predicted {predicted:.1f} s at L={length} (slope {time_prediction[1]:.2f} "
                    f"of the measured time), over the time budget of {time_budget_s:g} s")

    memory_columns = [("rss_growth_bytes", _number(last, "base_rss_bytes"), "resident memory")]
    if on_cuda:
        memory_columns.append(("cuda_peak_bytes", 0.0, "CUDA peak memory"))
    for column, fixed, name in memory_columns:
        prediction = _extrapolate(rows, column, length)
        if prediction is None:
            continue
        predicted = fixed + prediction[0]
        if predicted > memory_budget_bytes:
            return (f"predicted {predicted:.3g} B of {name} at L={length} (slope "
                    f"{prediction[1]:.2f}), over the memory budget of {memory_budget_bytes} B")
    return None


def _number(row: dict, column: str) -> float:
    value = row.get(column)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _extrapolate(rows: Sequence[dict], column: str, length: int) -> tuple[float, float] | None:
    """Return (predicted value, slope) of `column` at `length`, or None without two positives."""
    usable = [(int(row["seq_len"]), _number(row, column)) for row in rows]
    usable = [(seq_len, value) for seq_len, value in usable if value > 0]
    if len({seq_len for seq_len, _ in usable}) < 2:
        return None
    slope, _, _ = fit_exponent([seq_len for seq_len, _ in usable],
                               [value for _, value in usable])
    slope = min(max(slope, _SLOPE_RANGE[0]), _SLOPE_RANGE[1])
    last_len, last_value = usable[-1]
    return last_value * (length / last_len) ** slope, slope


def _add_estimate_if_missing(table: ResultTable, spec: PointSpec, *, reason: str) -> None:
    if table.find({**asdict(spec), "method": "estimate"}) is None:
        table.add(estimate_row(spec, reason=reason))


def estimate_row(spec: PointSpec, *, reason: str) -> dict:
    """Return the "estimated" row of `spec` from `estimate_point`, or an "error" row on failure.

    The estimate is of a CPU step, also for a CUDA point: the bytes and FLOPs of the same
    operators do not depend on the device. Provenance columns describe this process.
    """
    from bench.estimate import estimate_point
    from bench.measure import provenance

    row = {**asdict(spec), "method": "estimate", "status": "estimated", "reason": reason}
    try:
        estimate = estimate_point(spec.model, seq_len=spec.seq_len, batch_size=spec.batch_size,
                                  hidden_size=spec.hidden_size, phase=spec.phase,
                                  num_candidates=spec.num_candidates)
    except Exception as error:  # an estimate that fails must not stop the sweep
        logger.error("estimate of %s failed: %s", spec.describe(), error)
        row.update(status="error", reason=f"estimate failed: {type(error).__name__}: {error}")
        return row
    for column in ("params", "flops", "saved_bytes", "peak_live_bytes"):
        if column in estimate:
            row[column] = estimate[column]
    row.update({f"prov_{key}": value for key, value in provenance().items()})
    return row


def run_accuracy_sweep(
    *,
    models: Sequence[str],
    lengths: Iterable[int],
    dataset: str = "ml-100k",
    seeds: int = 1,
    hidden_size: int | None = None,
    output_dir: Path,
    data_dir: Path | None = None,
    device: str = "cpu",
    overrides: dict | None = None,
    cost_batch_size: int | None = None,
    time_budget_s: float | None = None,
    resume: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Train each model at each length up to the dataset's longest history; return accuracy rows.

    Rows go to `output_dir/accuracy.csv`, keyed by model, dataset, L, hidden size, max_epochs and
    seed, and a resumed run trains only the missing ones. Training runs keep their checkpoints under
    `output_dir/accuracy_runs`. `hidden_size`, when given, sets every model's width and, where
    needed, its head count (see `size_overrides`), so that accuracy sits beside the cost of the same
    model in the sweep. `overrides` sets other config fields of every model (max_epochs, for
    example). When `output_dir/points.csv` exists, each row gets the training cost of its L from it
    (see `attach_costs`) and a predicted training time (see `predict_training_seconds`). With
    `time_budget_s`, a run whose prediction exceeds it, or that has no prediction, is not trained:
    its row has status "skipped" and the reason, and a later call with a larger budget trains it.
    Raises ConvbenchError when no length fits the dataset.
    """
    from bench.measure import size_overrides
    from convrec.experiment import run_accuracy_point

    longest, users, usable = check_accuracy_dataset(dataset, lengths, output_dir=output_dir,
                                                    data_dir=data_dir)
    logger.info("accuracy on %s at L=%s (longest history %d), seeds 0..%d", dataset,
                ",".join(map(str, usable)), longest, seeds - 1)

    points_path = Path(output_dir) / POINTS_FILE
    points = pd.read_csv(points_path) if points_path.exists() else None
    if time_budget_s is not None and points is None:
        raise ConvbenchError(f"an accuracy time budget needs measured training steps, and "
                             f"{points_path} does not exist; run the sweep first or drop the "
                             "budget")
    table = ResultTable(Path(output_dir) / ACCURACY_FILE, ACCURACY_KEY_COLUMNS,
                        ACCURACY_KEY_COLUMNS, resume=resume)
    runs = [(model, length, seed) for model in models for length in usable
            for seed in range(seeds)]
    for model in models:
        for length in sorted(set(lengths) - set(usable)):
            for seed in range(seeds):
                config = _run_config(model, dict(overrides or {}))
                table.add({"model": model, "dataset": dataset, "seq_len": length,
                           "hidden_size": hidden_size, "max_epochs": config["max_epochs"],
                           "seed": seed, "device": device, "status": "skipped",
                           "reason": f"longer than every history of {dataset} (longest: "
                                     f"{longest} interactions)"})
    for model, length, seed in tqdm(runs, desc="accuracy", unit="run", disable=not progress):
        point_overrides = dict(overrides or {})
        if hidden_size is not None:
            point_overrides.update(size_overrides(model, seq_len=length, hidden_size=hidden_size))
        config = _run_config(model, point_overrides)
        key = {"model": model, "dataset": dataset, "seq_len": length,
               "hidden_size": hidden_size, "max_epochs": config["max_epochs"], "seed": seed}
        existing = table.find(key)
        if existing is not None and existing.get("status", "trained") != "skipped":
            continue
        row = {**key, "device": device}

        if points is not None:
            # A batch never has more rows than there are users.
            batch_size = min(config["batch_size"], users)
            steps = math.ceil(users / batch_size) * config["max_epochs"]
            predicted, basis = predict_training_seconds(
                points, model=model, seq_len=length, batch_size=batch_size,
                hidden_size=hidden_size, device=device, steps=steps)
            row.update(predicted_train_seconds=predicted, prediction=basis)
            if time_budget_s is not None and (predicted is None or predicted > time_budget_s):
                reason = (f"predicted {_duration(predicted)} of training exceeds the budget of "
                          f"{_duration(time_budget_s)}" if predicted is not None
                          else f"no training time can be predicted: {basis}")
                logger.warning("accuracy run of %s at L=%d skipped: %s", model, length, reason)
                table.add({**row, "status": "skipped", "reason": reason})
                continue

        result = run_accuracy_point(model, dataset, max_len=length, seed=seed,
                                    work_dir=Path(output_dir) / "accuracy_runs",
                                    data_dir=data_dir, device=device, overrides=point_overrides)
        table.add({**row, "status": "trained", "reason": "", **result})

    if points is not None:
        table.rows = attach_costs(table.frame(), points,
                                  batch_size=cost_batch_size).to_dict("records")
        table.save()
    return table.frame()


def check_accuracy_dataset(dataset: str, lengths: Iterable[int], *, output_dir: Path,
                           data_dir: Path | None = None) -> tuple[int, int, list[int]]:
    """Load the dataset of the accuracy runs and its split; return what the runs need.

    Returns the longest training history, the number of users with one, and the lengths that
    fit. `scale` calls this before the cost sweep, so that a missing or unusable dataset fails
    in seconds, not after hours of measurement. Raises ConvbenchError (or DataError) when the
    dataset cannot be read or split, or when no length fits it.
    """
    from convrec.experiment import history_stats, prepare_dataset

    longest, users = history_stats(dataset, data_dir=data_dir)
    if users == 0:
        raise ConvbenchError(f"no user of {dataset} has a training history (a user needs at "
                             "least 3 interactions); use a larger dataset for --accuracy")
    usable = sorted(length for length in set(lengths) if length <= longest)
    if not usable:
        raise ConvbenchError(f"no sweep length fits the longest history of {dataset} "
                             f"({longest} interactions); lower --min-len or pass --lengths")
    # Drawing the split checks that the catalogue has room for the evaluation negatives.
    prepare_dataset(dataset, Path(output_dir) / "accuracy_runs", data_dir)
    return longest, users, usable


def _run_config(model: str, overrides: dict) -> dict:
    """Return the config fields of one accuracy run: the model's defaults with `overrides`."""
    cls = get_model_class(model)
    config = {field.name: field.default for field in dataclasses.fields(cls.config_class)}
    config.update(overrides)
    return config


def _duration(seconds: float) -> str:
    """Format a duration in seconds under two minutes, in minutes above."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def predict_training_seconds(points: pd.DataFrame, *, model: str, seq_len: int,
                             batch_size: int, hidden_size: int | None, device: str,
                             steps: int) -> tuple[float | None, str]:
    """Predict the time of `steps` training steps from the sweep's measured training points.

    The step time is the measured one at (model, L, D, device type) and the run's batch size.
    Between two measured batch sizes it is interpolated on log-log axes. Above the largest
    measured one it is scaled linearly from it, which overestimates when a larger batch uses
    the cores better, and below the smallest one it is that step's time, which overestimates
    too. Returns the seconds and how they were found, or None and why not. Evaluation passes
    are not counted.
    """
    device_type = str(device).split(":")[0]
    train = points[(points["model"] == model)
                   & (points["seq_len"].astype(int) == int(seq_len))
                   & (points["device"].astype(str).str.split(":").str[0] == device_type)]
    if hidden_size is not None:
        train = train[train["hidden_size"].astype(int) == int(hidden_size)]
    phases = set(train["phase"].astype(str))
    train = train[train["phase"] == "train"]
    measured = train[(train["status"] == "measured") & train["time_median_s"].notna()]
    if measured.empty:
        if "train" not in phases:
            return None, (f"the sweep has no training step of {model} at L={seq_len}; "
                          "include `train` in --phases")
        statuses = sorted(set(train[train["method"] == "measure"]["status"].astype(str)))
        return None, (f"no training step of {model} at L={seq_len} was measured (sweep "
                      f"status: {', '.join(statuses) or 'none'})")

    times = measured.groupby(measured["batch_size"].astype(int))["time_median_s"].median()
    below = times[times.index <= batch_size]
    above = times[times.index >= batch_size]
    if not below.empty and below.index[-1] == batch_size:
        step_seconds, basis = float(below.iloc[-1]), f"measured at B={batch_size}"
    elif not below.empty and not above.empty:
        low, high = int(below.index[-1]), int(above.index[0])
        fraction = math.log(batch_size / low) / math.log(high / low)
        step_seconds = math.exp(math.log(below.iloc[-1])
                                + fraction * math.log(above.iloc[0] / below.iloc[-1]))
        basis = f"interpolated between B={low} and B={high}"
    elif not below.empty:
        low = int(below.index[-1])
        step_seconds = float(below.iloc[-1]) * batch_size / low
        basis = f"measured at B={low}, scaled linearly to B={batch_size} (an overestimate)"
    else:
        high = int(above.index[0])
        step_seconds = float(above.iloc[0])
        basis = f"measured at B={high}, larger than B={batch_size} (an overestimate)"
    return step_seconds * steps, f"{steps} steps x {step_seconds:.3g} s, {basis}"


def attach_costs(accuracy: pd.DataFrame, points: pd.DataFrame, *,
                 batch_size: int | None = None) -> pd.DataFrame:
    """Add the training cost of each accuracy row's (model, L, device) from the sweep table.

    Costs come from the "train" phase at `batch_size` (default: the largest batch size in the
    sweep) and the row's hidden size. `train_step_seconds`, `rss_growth_bytes` and
    `cuda_peak_bytes` come from the measured point. `peak_live_bytes` comes from the measured
    point, or from the estimate when the length was not measured. `cost_batch_size` records
    the batch size of these costs.
    """
    accuracy = accuracy.copy()
    for column in ("train_step_seconds", "peak_live_bytes", "rss_growth_bytes",
                   "cuda_peak_bytes"):
        accuracy[column] = float("nan")
    train = points[points["phase"] == "train"] if not points.empty else points
    if train.empty:
        return accuracy
    batch = batch_size if batch_size is not None else int(train["batch_size"].max())
    train = train[train["batch_size"].astype(int) == batch]
    accuracy["cost_batch_size"] = batch

    for index, row in accuracy.iterrows():
        device_type = str(row.get("device") or "cpu").split(":")[0]
        same = train[(train["model"] == row["model"])
                     & (train["seq_len"].astype(int) == int(row["seq_len"]))
                     & (train["device"].astype(str).str.split(":").str[0] == device_type)]
        if row.get("hidden_size") is not None and not pd.isna(row.get("hidden_size")):
            same = same[same["hidden_size"].astype(int) == int(row["hidden_size"])]
        measured = same[same["status"] == "measured"]
        estimated = same[same["status"] == "estimated"]
        if not measured.empty:
            first = measured.iloc[0]
            accuracy.loc[index, "train_step_seconds"] = first.get("time_median_s")
            accuracy.loc[index, "rss_growth_bytes"] = first.get("rss_growth_bytes")
            accuracy.loc[index, "cuda_peak_bytes"] = first.get("cuda_peak_bytes")
            accuracy.loc[index, "peak_live_bytes"] = first.get("peak_live_bytes")
        elif not estimated.empty:
            accuracy.loc[index, "peak_live_bytes"] = estimated.iloc[0].get("peak_live_bytes")
    return accuracy
