"""The scale sweep: skip prediction, resume, budgets, report and command line.

Only the fixtures marked "real" start point processes (a few seconds each); the other tests
replace `run_point` with a function of known costs.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

import bench.sweep as sweep
from bench.point import PointSpec, is_out_of_memory, run_point
from bench.report import render_summary, tidy_frame, write_report
from bench.scale_cli import parse_int_list, parse_name_list, run_scale, scale_command
from bench.sweep import (
    ResultTable,
    default_lengths,
    predict_over_budget,
    run_sweep,
    validate_devices,
)
from convrec.errors import ConvbenchError

GIB = 1024**3
TINY = dict(models=["sasrec"], lengths=[8, 16], batch_sizes=[1], phases=["train"],
            devices=["cpu"], hidden_size=8, warmup=0, repeats=1, progress=False)


def _fake_run_point(costs: dict[int, str] | None = None):
    """Return a stand-in for run_point: time grows like L^2, and `costs` forces statuses."""
    calls = []

    def fake(spec: PointSpec, *, time_budget_s: float, memory_budget_bytes: int) -> dict:
        calls.append(spec.seq_len)
        status = (costs or {}).get(spec.seq_len, "measured")
        row = {**vars(spec), "method": "measure", "status": status, "reason": ""}
        if status == "measured":
            row.update(time_median_s=1e-4 * spec.seq_len**2, process_seconds=1.0 +
                       1e-3 * spec.seq_len**2, measure_seconds=1e-3 * spec.seq_len**2,
                       base_rss_bytes=1e8, rss_growth_bytes=1e3 * spec.seq_len, params=10,
                       flops=100 * spec.seq_len, saved_bytes=spec.seq_len,
                       peak_live_bytes=2 * spec.seq_len)
        return row

    fake.calls = calls
    return fake


def _fake_estimate_row(spec: PointSpec, *, reason: str) -> dict:
    return {**vars(spec), "method": "estimate", "status": "estimated", "reason": reason,
            "params": 10, "flops": 100 * spec.seq_len, "saved_bytes": spec.seq_len,
            "peak_live_bytes": 2 * spec.seq_len}


@pytest.fixture
def fake_points(monkeypatch):
    fake = _fake_run_point()
    monkeypatch.setattr(sweep, "run_point", fake)
    monkeypatch.setattr(sweep, "estimate_row", _fake_estimate_row)
    return fake


# --- lengths, table, prediction -----------------------------------------------------------------


def test_default_lengths_doubling():
    assert default_lengths(16, 128) == [16, 32, 64, 128]


def test_default_lengths_keeps_max():
    assert default_lengths(16, 100) == [16, 32, 64, 100]


def test_default_lengths_rejects_inverted_range():
    with pytest.raises(ConvbenchError):
        default_lengths(64, 16)


def test_result_table_replaces_same_key(tmp_path):
    table = ResultTable(tmp_path / "points.csv", sweep.KEY_COLUMNS)
    spec = vars(PointSpec("sasrec", 8, 1, 8, "train"))
    table.add({**spec, "method": "measure", "status": "error"})
    table.add({**spec, "method": "measure", "status": "measured"})
    table.add({**spec, "method": "estimate", "status": "estimated"})
    frame = pd.read_csv(tmp_path / "points.csv")
    assert sorted(frame["status"]) == ["estimated", "measured"]


def test_result_table_resume_reads_rows(tmp_path):
    path = tmp_path / "points.csv"
    ResultTable(path, sweep.KEY_COLUMNS).add(
        {**vars(PointSpec("sasrec", 8, 1, 8, "train")), "method": "measure", "status": "oom"})
    resumed = ResultTable(path, sweep.KEY_COLUMNS)
    found = resumed.find({**vars(PointSpec("sasrec", 8, 1, 8, "train")), "method": "measure"})
    assert found["status"] == "oom"
    assert ResultTable(path, sweep.KEY_COLUMNS, resume=False).rows == []


def _measured(lengths, seconds, growth=1e3):
    return [{"seq_len": length, "measure_seconds": seconds(length),
             "process_seconds": 2.0 + seconds(length), "base_rss_bytes": 1e8,
             "rss_growth_bytes": growth * length} for length in lengths]


def test_prediction_over_time_budget():
    rows = _measured([16, 32, 64], lambda length: 1e-3 * length**2)
    # Next L=128 takes 2 s + 16.4 s.
    reason = predict_over_budget(rows, 128, time_budget_s=10, memory_budget_bytes=GIB)
    assert reason is not None
    assert "time budget" in reason


def test_prediction_within_budget():
    rows = _measured([16, 32, 64], lambda length: 1e-3 * length**2)
    assert predict_over_budget(rows, 128, time_budget_s=60, memory_budget_bytes=GIB) is None


def test_prediction_over_memory_budget():
    rows = _measured([16, 32, 64], lambda length: 1e-3 * length, growth=1e7)
    # Next L=128 grows by 1.28e9 B on top of 1e8 B.
    reason = predict_over_budget(rows, 128, time_budget_s=60, memory_budget_bytes=GIB)
    assert reason is not None
    assert "memory budget" in reason


def test_prediction_needs_two_lengths():
    rows = _measured([16], lambda length: 100.0)
    assert predict_over_budget(rows, 32, time_budget_s=1, memory_budget_bytes=1) is None


# --- sweep logic with a stand-in for the point process -------------------------------------------


def test_sweep_skips_predicted_lengths(tmp_path, fake_points):
    # 1 s + 1e-3 L^2 s: L=64 needs 5.1 s, L=128 would need 17.4 s.
    frame = run_sweep(**{**TINY, "lengths": [16, 32, 64, 128, 256]}, output_dir=tmp_path,
                      time_budget_s=10, memory_budget_bytes=GIB)
    measure = frame[frame["method"] == "measure"].set_index("seq_len")
    assert fake_points.calls == [16, 32, 64]
    assert measure.loc[128, "status"] == "skipped"
    assert measure.loc[256, "status"] == "skipped"
    assert "time budget" in measure.loc[128, "reason"]


def test_sweep_estimates_every_unmeasured_point(tmp_path, fake_points):
    frame = run_sweep(**{**TINY, "lengths": [16, 32, 64, 128, 256]}, output_dir=tmp_path,
                      time_budget_s=10, memory_budget_bytes=GIB)
    estimated = set(frame.loc[frame["status"] == "estimated", "seq_len"])
    # Both skipped lengths, plus the smallest and largest measured ones as checks.
    assert estimated == {16, 64, 128, 256}


def test_sweep_stops_series_after_oom(tmp_path, monkeypatch):
    fake = _fake_run_point({32: "oom"})
    monkeypatch.setattr(sweep, "run_point", fake)
    monkeypatch.setattr(sweep, "estimate_row", _fake_estimate_row)
    frame = run_sweep(**{**TINY, "lengths": [16, 32, 64]}, output_dir=tmp_path,
                      time_budget_s=600, memory_budget_bytes=GIB)
    measure = frame[frame["method"] == "measure"].set_index("seq_len")
    assert fake.calls == [16, 32]
    assert measure.loc[64, "status"] == "skipped"
    assert "oom" in measure.loc[64, "reason"]


def test_sweep_retries_errors_on_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "estimate_row", _fake_estimate_row)
    monkeypatch.setattr(sweep, "run_point", _fake_run_point({16: "error"}))
    run_sweep(**TINY, output_dir=tmp_path, time_budget_s=600, memory_budget_bytes=GIB)
    again = _fake_run_point()
    monkeypatch.setattr(sweep, "run_point", again)
    run_sweep(**TINY, output_dir=tmp_path, time_budget_s=600, memory_budget_bytes=GIB)
    assert again.calls == [16]


@pytest.mark.parametrize("first, second", [([16, 32], [16]), ([32], [16, 32, 64])],
                         ids=["subset", "superset"])
def test_sweep_resume_other_lengths(tmp_path, fake_points, first, second):
    run_sweep(**{**TINY, "lengths": first}, output_dir=tmp_path, time_budget_s=600,
              memory_budget_bytes=GIB)
    frame = run_sweep(**{**TINY, "lengths": second}, output_dir=tmp_path, time_budget_s=600,
                      memory_budget_bytes=GIB)
    measured = frame.loc[frame["status"] == "measured", "seq_len"]
    assert sorted(measured) == sorted(set(first) | set(second))
    assert fake_points.calls == first + sorted(set(second) - set(first))


@pytest.mark.parametrize("device", ["tpu", "gpu0", "cuda:x", "cuda:-1", "cpu:0"])
def test_sweep_rejects_invalid_device(tmp_path, fake_points, device):
    with pytest.raises(ConvbenchError, match=re.escape(repr(device))):
        run_sweep(**{**TINY, "devices": ["cpu", device]}, output_dir=tmp_path,
                  time_budget_s=600, memory_budget_bytes=GIB)
    assert fake_points.calls == []


def test_validate_devices_cuda_index(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert validate_devices([" CPU", "cuda:01", "cuda", "cpu"]) == ["cpu", "cuda:1", "cuda"]
    with pytest.raises(ConvbenchError, match="'cuda:2'"):
        validate_devices(["cuda:2"])


def test_validate_devices_without_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConvbenchError, match="'cuda:0'"):
        validate_devices(["cpu", "cuda:0"])


def test_sweep_rejects_unknown_phase(tmp_path, fake_points):
    with pytest.raises(ConvbenchError):
        run_sweep(**{**TINY, "phases": ["backward"]}, output_dir=tmp_path, time_budget_s=1,
                  memory_budget_bytes=GIB)


def test_sweep_rejects_unknown_model(tmp_path, fake_points):
    with pytest.raises(ConvbenchError):
        run_sweep(**{**TINY, "models": ["bert4rec"]}, output_dir=tmp_path, time_budget_s=1,
                  memory_budget_bytes=GIB)


def test_attach_costs_prefers_measured():
    points = pd.DataFrame([
        {"model": "sasrec", "phase": "train", "seq_len": 16, "batch_size": 128,
         "hidden_size": 8, "device": "cpu", "status": "measured", "time_median_s": 0.5,
         "peak_live_bytes": 100.0, "rss_growth_bytes": 10.0, "cuda_peak_bytes": None},
        {"model": "sasrec", "phase": "train", "seq_len": 32, "batch_size": 128,
         "hidden_size": 8, "device": "cpu", "status": "estimated", "peak_live_bytes": 400.0},
    ])
    accuracy = pd.DataFrame({"model": ["sasrec", "sasrec"], "seq_len": [16, 32],
                             "hidden_size": [8, 8], "device": ["cpu", "cpu"]})
    joined = sweep.attach_costs(accuracy, points).set_index("seq_len")
    assert joined.loc[16, "train_step_seconds"] == 0.5
    assert joined.loc[32, "peak_live_bytes"] == 400.0
    assert pd.isna(joined.loc[32, "train_step_seconds"])


def test_accuracy_sweep_resumes(tmp_path, monkeypatch):
    import convrec.experiment as experiment

    calls = []

    def fake_accuracy_point(model_name, dataset, *, max_len, seed, work_dir, data_dir=None,
                            device="cpu", overrides=None):
        calls.append((model_name, max_len, seed, overrides["hidden_size"]))
        return {"test_full_ndcg@10": 0.1, "test_full_hr@10": 0.2, "epochs": 1,
                "train_seconds": 1.0, "params": 10}

    monkeypatch.setattr(experiment, "run_accuracy_point", fake_accuracy_point)
    monkeypatch.setattr(experiment, "history_stats", lambda dataset, data_dir=None: (40, 100))
    monkeypatch.setattr(experiment, "prepare_dataset", lambda *args: None)
    options = dict(models=["sasrec"], lengths=[16, 32, 64], dataset="ml-100k", seeds=2,
                   hidden_size=8, output_dir=tmp_path, progress=False)
    frame = sweep.run_accuracy_sweep(**options)
    # L=64 exceeds the longest history of 40: its rows give that reason, and nothing trains.
    trained = frame[frame["status"] == "trained"]
    assert sorted(trained["seq_len"].tolist()) == [16, 16, 32, 32]
    too_long = frame[frame["seq_len"] == 64]
    assert too_long["status"].tolist() == ["skipped", "skipped"]
    assert "longest: 40" in too_long["reason"].iloc[0]
    assert calls[0] == ("sasrec", 16, 0, 8)
    sweep.run_accuracy_sweep(**options)
    assert len(calls) == 4


def test_accuracy_sweep_builds_the_profiled_model(tmp_path, monkeypatch):
    """CARCA's 3 heads do not divide D=8: the accuracy run gets the head count the profiler uses."""
    import convrec.experiment as experiment
    from bench.measure import build_profiled_model
    from convrec.data.schema import synthetic_meta
    from convrec.models.registry import build_model

    seen = []

    def fake_accuracy_point(model_name, dataset, *, max_len, seed, work_dir, data_dir=None,
                            device="cpu", overrides=None):
        seen.append(overrides)
        # The overrides must build a real model, as run_one would.
        build_model(model_name, synthetic_meta(num_items=30, attribute_width=3,
                                               context_width=2, seed=0), **overrides)
        return {"test_full_ndcg@10": 0.1, "epochs": 1, "train_seconds": 1.0, "params": 10}

    monkeypatch.setattr(experiment, "run_accuracy_point", fake_accuracy_point)
    monkeypatch.setattr(experiment, "history_stats", lambda dataset, data_dir=None: (40, 100))
    monkeypatch.setattr(experiment, "prepare_dataset", lambda *args: None)
    sweep.run_accuracy_sweep(models=["carca"], lengths=[16], hidden_size=8,
                             overrides={"max_epochs": 3}, output_dir=tmp_path, progress=False)
    profiled = build_profiled_model("carca", seq_len=16, hidden_size=8)
    assert seen == [{"max_epochs": 3, "max_len": 16, "hidden_size": 8,
                     "num_heads": profiled.config.num_heads}]
    assert profiled.config.num_heads == 2


def _train_points(rows):
    """Measured training points of SASRec, D=8: (L, B, seconds per step, status)."""
    return pd.DataFrame([
        {"model": "sasrec", "phase": "train", "seq_len": length, "batch_size": batch,
         "hidden_size": 8, "device": "cpu", "method": "measure", "status": status,
         "time_median_s": seconds, "peak_live_bytes": 100.0, "reason": ""}
        for length, batch, seconds, status in rows])


@pytest.mark.parametrize("rows, batch_size, seconds, basis", [
    # The run's own batch size was measured.
    ([(16, 32, 0.5, "measured"), (16, 128, 1.0, "measured")], 128, 10.0, "measured at B=128"),
    # B=128 timed out, so the B=32 step is scaled linearly.
    ([(16, 32, 0.5, "measured"), (16, 128, None, "timeout")], 128, 20.0,
     "scaled linearly to B=128"),
    # 1 s at B=4 and 4 s at B=64 lie on a line of slope 0.5 in log-log space: B=16 takes 2 s.
    ([(16, 4, 1.0, "measured"), (16, 64, 4.0, "measured")], 16, 20.0,
     "between B=4 and B=64"),
    # Only a larger batch size was measured: its step time is taken as it is.
    ([(16, 32, 0.5, "measured")], 8, 5.0, "larger than B=8"),
])
def test_prediction_from_batch_sizes(rows, batch_size, seconds, basis):
    predicted, how = sweep.predict_training_seconds(
        _train_points(rows), model="sasrec", seq_len=16, batch_size=batch_size, hidden_size=8,
        device="cpu", steps=10)
    assert predicted == pytest.approx(seconds)
    assert basis in how


def test_prediction_without_train_phase():
    points = _train_points([(16, 32, 0.5, "measured")]).assign(phase="infer")
    seconds, basis = sweep.predict_training_seconds(
        points, model="sasrec", seq_len=16, batch_size=32, hidden_size=8, device="cpu", steps=1)
    assert seconds is None
    assert "--phases" in basis


def test_prediction_missing_names_status():
    points = _train_points([(16, 128, None, "timeout")])
    seconds, basis = sweep.predict_training_seconds(
        points, model="sasrec", seq_len=16, batch_size=128, hidden_size=8, device="cpu",
        steps=10)
    assert seconds is None
    assert "timeout" in basis


def test_accuracy_budget_skips_then_trains(tmp_path, monkeypatch):
    import convrec.experiment as experiment

    calls = []

    def fake_accuracy_point(model_name, dataset, *, max_len, seed, work_dir, data_dir=None,
                            device="cpu", overrides=None):
        calls.append(max_len)
        return {"test_full_ndcg@10": 0.1, "epochs": 1, "train_seconds": 1.0, "params": 10}

    monkeypatch.setattr(experiment, "run_accuracy_point", fake_accuracy_point)
    monkeypatch.setattr(experiment, "history_stats", lambda dataset, data_dir=None: (40, 256))
    monkeypatch.setattr(experiment, "prepare_dataset", lambda *args: None)
    # SASRec's batch size is 128, so 256 users give 2 steps per epoch; 10 epochs give 20 steps.
    _train_points([(16, 128, 1.0, "measured"), (32, 128, 5.0, "measured")]).to_csv(
        tmp_path / sweep.POINTS_FILE, index=False)
    options = dict(models=["sasrec"], lengths=[16, 32], hidden_size=8,
                   overrides={"max_epochs": 10}, output_dir=tmp_path, progress=False)

    frame = sweep.run_accuracy_sweep(**options, time_budget_s=50).set_index("seq_len")
    assert calls == [16]
    assert frame.loc[16, "status"] == "trained"
    assert frame.loc[16, "predicted_train_seconds"] == 20.0
    assert frame.loc[32, "status"] == "skipped"
    assert "exceeds the budget" in frame.loc[32, "reason"]
    assert pd.isna(frame.loc[32, "test_full_ndcg@10"])

    summary = render_summary(_train_points([(16, 128, 1.0, "measured")]).assign(
        params=1, flops=1.0), frame.reset_index())
    assert "Runs not trained" in summary

    frame = sweep.run_accuracy_sweep(**options, time_budget_s=200).set_index("seq_len")
    assert calls == [16, 32]
    assert frame.loc[32, "status"] == "trained"


def test_accuracy_keys_width_and_epochs(tmp_path, monkeypatch):
    import convrec.experiment as experiment

    calls = []

    def fake_accuracy_point(model_name, dataset, *, max_len, seed, work_dir, data_dir=None,
                            device="cpu", overrides=None):
        calls.append((overrides["hidden_size"], overrides["max_epochs"]))
        return {"test_full_ndcg@10": 0.1, "epochs": 1, "train_seconds": 1.0, "params": 10}

    monkeypatch.setattr(experiment, "run_accuracy_point", fake_accuracy_point)
    monkeypatch.setattr(experiment, "history_stats", lambda dataset, data_dir=None: (40, 256))
    monkeypatch.setattr(experiment, "prepare_dataset", lambda *args: None)
    options = dict(models=["sasrec"], lengths=[16], output_dir=tmp_path, progress=False)
    sweep.run_accuracy_sweep(**options, hidden_size=8, overrides={"max_epochs": 2})
    sweep.run_accuracy_sweep(**options, hidden_size=16, overrides={"max_epochs": 2})
    frame = sweep.run_accuracy_sweep(**options, hidden_size=8, overrides={"max_epochs": 3})
    assert calls == [(8, 2), (16, 2), (8, 3)]
    assert len(frame) == 3


def test_scale_checks_dataset_before_sweep(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(sweep, "run_sweep", lambda **kwargs: measured.append(kwargs))
    with pytest.raises(ConvbenchError):
        run_scale(**TINY, output=tmp_path, time_budget_s=10, memory_budget_bytes=GIB,
                  accuracy=True, dataset=str(tmp_path / "missing.csv"))
    assert measured == []


def test_accuracy_budget_needs_points(tmp_path, monkeypatch):
    import convrec.experiment as experiment

    monkeypatch.setattr(experiment, "history_stats", lambda dataset, data_dir=None: (40, 256))

    monkeypatch.setattr(experiment, "prepare_dataset", lambda *args: None)
    with pytest.raises(ConvbenchError, match="points.csv"):
        sweep.run_accuracy_sweep(models=["sasrec"], lengths=[16], output_dir=tmp_path,
                                 time_budget_s=60, progress=False)


def test_accuracy_sweep_rejects_short_dataset(tmp_path, monkeypatch):
    import convrec.experiment as experiment

    monkeypatch.setattr(experiment, "history_stats", lambda dataset, data_dir=None: (10, 100))

    monkeypatch.setattr(experiment, "prepare_dataset", lambda *args: None)
    with pytest.raises(ConvbenchError):
        sweep.run_accuracy_sweep(models=["sasrec"], lengths=[16], output_dir=tmp_path,
                                 progress=False)


# --- real point processes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    """Real: a full `run_scale` of SASRec at L=8 and 16, B=1, D=8, training step only."""
    output = tmp_path_factory.mktemp("scale")
    paths = run_scale(**{key: value for key, value in TINY.items()}, output=output,
                      time_budget_s=120, memory_budget_bytes=4 * GIB)
    return output, paths


def test_real_sweep_measures_points(real_sweep):
    output, _ = real_sweep
    frame = pd.read_csv(output / "points.csv")
    measure = frame[frame["method"] == "measure"]
    assert sorted(measure["seq_len"]) == [8, 16]
    assert set(measure["status"]) == {"measured"}, measure["reason"].tolist()
    assert (measure["time_median_s"] > 0).all()
    assert (measure["peak_rss_bytes"] > 0).all()
    assert measure["prov_torch_version"].notna().all()


def test_real_sweep_estimates_match(real_sweep):
    output, _ = real_sweep
    frame = pd.read_csv(output / "points.csv")
    measured = frame[frame["status"] == "measured"].set_index("seq_len")
    estimated = frame[frame["status"] == "estimated"].set_index("seq_len")
    for column in ("params", "flops", "saved_bytes", "peak_live_bytes"):
        assert estimated.loc[16, column] == measured.loc[16, column], column


def test_real_sweep_writes_report(real_sweep):
    output, paths = real_sweep
    summary = paths["summary"].read_text()
    assert "## Scaling exponents" in summary
    assert "## Estimate against measurement" in summary
    assert (output / "scale_cpu_B1.png").stat().st_size > 0
    records = json.loads(paths["provenance"].read_text())
    # Two measured points plus their two estimates, each row with its provenance.
    assert sum(record["rows"] for record in records) == 4


def test_real_sweep_resume_measures_nothing(real_sweep, monkeypatch):
    output, _ = real_sweep
    before = pd.read_csv(output / "points.csv")

    def fail(*args, **kwargs):
        raise AssertionError("a resumed sweep started a point process")

    monkeypatch.setattr(sweep, "run_point", fail)
    run_sweep(**TINY, output_dir=output, time_budget_s=120, memory_budget_bytes=4 * GIB)
    after = pd.read_csv(output / "points.csv")
    assert len(after) == len(before)


def test_real_sweep_timeout_is_estimated(tmp_path):
    frame = run_sweep(**TINY, output_dir=tmp_path, time_budget_s=0.2,
                      memory_budget_bytes=4 * GIB)
    measure = frame[frame["method"] == "measure"].set_index("seq_len")
    estimated = frame[frame["status"] == "estimated"]
    assert measure.loc[8, "status"] == "timeout"
    assert measure.loc[16, "status"] == "skipped"
    assert sorted(estimated["seq_len"]) == [8, 16]
    assert (estimated["flops"] > 0).all()


def test_real_point_out_of_memory():
    # 1 MiB cannot even hold the interpreter, so the parent's RSS watch kills the child.
    row = run_point(PointSpec("sasrec", 8, 1, 8, "infer"), time_budget_s=60,
                    memory_budget_bytes=1 << 20)
    assert row["status"] == "oom"


# --- point helpers, report and command line ------------------------------------------------------


@pytest.mark.parametrize("error, expected", [
    (MemoryError(), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 B"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_is_out_of_memory(error, expected):
    assert is_out_of_memory(error) is expected


def test_tidy_frame_keeps_points_without_values():
    points = pd.DataFrame([
        {"model": "sasrec", "phase": "train", "seq_len": 8, "batch_size": 1, "hidden_size": 8,
         "device": "cpu", "method": "measure", "status": "measured", "reason": "",
         "flops": 10.0, "params": 3.0, "prov_torch_version": "2.13"},
        {"model": "sasrec", "phase": "train", "seq_len": 16, "batch_size": 1, "hidden_size": 8,
         "device": "cpu", "method": "measure", "status": "timeout", "reason": "slow",
         "flops": None, "params": None, "prov_torch_version": None},
    ])
    tidy = tidy_frame(points)
    assert len(tidy) == 3
    assert tidy.loc[tidy["seq_len"] == 16, "status"].tolist() == ["timeout"]
    assert list(tidy.columns[-3:]) == ["metric", "value", "prov_torch_version"]


def test_summary_lists_crossover():
    rows = []
    for model, exponent in (("convrec", 1), ("sasrec", 2)):
        for length in (16, 32, 64, 128, 256):
            rows.append({"model": model, "phase": "train", "seq_len": length, "batch_size": 1,
                         "hidden_size": 8, "device": "cpu", "method": "measure",
                         "status": "measured", "reason": "",
                         "time_median_s": (100.0 if model == "convrec" else 0.5)
                         * length**exponent})
    summary = render_summary(pd.DataFrame(rows))
    assert "L = 200" in summary


def _fit_points(lengths, cost) -> pd.DataFrame:
    return pd.DataFrame([{"model": "convrec", "phase": "train", "seq_len": length,
                          "batch_size": 1, "hidden_size": 8, "device": "cpu",
                          "method": "measure", "status": "measured", "reason": "",
                          "time_median_s": cost(length)} for length in lengths])


def test_summary_marks_two_length_fit():
    summary = render_summary(_fit_points([16, 32], lambda length: 1e-3 * length))
    assert "not available: 2 length(s)" in summary
    assert "1.00 (1.000)" not in summary


def test_summary_flags_low_r2():
    # Costs that jump up and down around a flat line: the slope's R^2 is near 0.
    costs = {16: 1.0, 32: 9.0, 64: 1.5, 128: 8.0, 256: 1.0, 512: 9.0, 1024: 1.2}
    summary = render_summary(_fit_points(list(costs), costs.get))
    assert "low R²: noisy or not a power law" in summary


def test_summary_leaves_good_fit_unflagged():
    summary = render_summary(_fit_points([16, 32, 64, 128], lambda length: 1e-3 * length))
    exponent_section = summary.split("## Scaling exponents")[1].split("## Crossovers")[0]
    assert "1.00 (1.000), top 1.00 |" in exponent_section


def test_summary_lists_disagreeing_estimates():
    rows = []
    for length, estimated_bytes in ((16, 90.0), (32, 200.0)):
        for method, status, peak in (("measure", "measured", 100.0 * length / 16),
                                     ("estimate", "estimated", estimated_bytes)):
            rows.append({"model": "sasrec", "phase": "infer", "seq_len": length,
                         "batch_size": 1, "hidden_size": 8, "device": "cpu",
                         "method": method, "status": status, "reason": "", "params": 10,
                         "flops": 1e6 * length, "saved_bytes": 0.0, "peak_live_bytes": peak})
    section = render_summary(pd.DataFrame(rows)).split("## Estimate against measurement")[1]
    section = section.split("## ")[0]
    assert "Points with both: 2." in section
    assert "agree within 0.1% in every quantity: 1." in section
    assert "| sasrec | infer | 16 |" in section
    assert "| sasrec | infer | 32 |" not in section


def test_write_report_files(tmp_path):
    points = pd.DataFrame([{"model": "sasrec", "phase": "train", "seq_len": 8,
                            "batch_size": 1, "hidden_size": 8, "device": "cpu",
                            "method": "measure", "status": "skipped", "reason": "too slow"}])
    paths = write_report(tmp_path, points)
    assert "too slow" in paths["summary"].read_text()
    assert paths["tidy"].stat().st_size > 0


def test_parse_int_list_sorts_and_dedups():
    assert parse_int_list("128, 1,32,1", "--batch-sizes") == [1, 32, 128]


@pytest.mark.parametrize("text", ["", "1,x", "0,4"])
def test_parse_int_list_rejects(text):
    with pytest.raises(ConvbenchError):
        parse_int_list(text, "--lengths")


def test_parse_name_list_rejects_unknown():
    with pytest.raises(ConvbenchError):
        parse_name_list("train,backward", "--phases", ["train", "infer"])


def test_scale_command_passes_options(tmp_path, monkeypatch):
    received = {}

    def fake_run_scale(**kwargs):
        received.update(kwargs)
        return {}

    monkeypatch.setattr("bench.scale_cli.run_scale", fake_run_scale)
    import typer

    app = typer.Typer()
    app.command()(scale_command)
    result = CliRunner().invoke(app, ["--lengths", "64,16", "--models", "sasrec",
                                      "--memory-budget", "2", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert received["lengths"] == [16, 64]
    assert received["models"] == ["sasrec"]
    assert received["memory_budget_bytes"] == 2 * GIB
    assert received["hidden_size"] == 64


def test_scale_command_rejects_invalid_device(tmp_path, monkeypatch):
    def fail(**kwargs):
        raise AssertionError("run_scale was called with an invalid device")

    monkeypatch.setattr("bench.scale_cli.run_scale", fail)
    with pytest.raises(ConvbenchError, match="'tpu'"):
        scale_command(devices="cpu,tpu", lengths="16", output=tmp_path)


def test_scale_help_fits_80_columns():
    import typer

    app = typer.Typer(add_completion=False)
    app.command()(scale_command)
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_scale_command_rejects_bad_range(tmp_path):
    with pytest.raises(ConvbenchError):
        scale_command(max_len=16, min_len=64, output=tmp_path)
