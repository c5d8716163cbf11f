"""Tests of the memory-growth gate: comparison, exponent check, baseline file and command."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import bench.gate_cli
from bench.gate import (
    GateGrid,
    GateResult,
    GateRow,
    check_exponents,
    fit_exponent,
    load_baseline,
    run_gate,
)
from bench.gate_cli import gate_command
from convrec.errors import ConvbenchError
from convrec.models.convrec import ConvRec

# ConvRec alone at two lengths, with small sizes: four real measurements per gate run.
SMALL_GRID = GateGrid(models=("convrec",), seq_lens=(16, 32), batch_size=2, hidden_size=8,
                      num_candidates=11, num_items=50)


@pytest.fixture(scope="module")
def recorded_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "baseline.json"
    result = run_gate(baseline_path=path, update=True, grid=SMALL_GRID)
    assert result.updated, result.render()
    return path


@pytest.fixture
def baseline(recorded_baseline, tmp_path) -> Path:
    """A fresh copy of the recorded baseline that a test may edit."""
    path = tmp_path / "baseline.json"
    shutil.copy(recorded_baseline, path)
    return path


def _edit_value(path: Path, model: str, seq_len: int, quantity: str, factor: float) -> int:
    data = json.loads(path.read_text())
    for point in data["points"]:
        if point["model"] == model and point["seq_len"] == seq_len:
            point[quantity] = int(point[quantity] * factor)
            edited = point[quantity]
    path.write_text(json.dumps(data))
    return edited


def _plant_pairwise_tensor(monkeypatch) -> None:
    """Make ConvRec build a (B, L, L) tensor that autograd keeps for backward."""
    original = ConvRec._sequence_vector

    def quadratic(self, batch, profile):
        sequence_vector = original(self, batch, profile)
        pairwise = torch.tanh(profile @ profile.transpose(1, 2))  # (B, L, L)
        return sequence_vector + pairwise.mean(dim=(1, 2)).unsqueeze(-1)

    monkeypatch.setattr(ConvRec, "_sequence_vector", quadratic)


# --- gate runs --------------------------------------------------------------------------------


def test_baseline_file_contents(recorded_baseline):
    data = load_baseline(recorded_baseline)
    assert data["grid"]["seq_lens"] == [16, 32]
    assert data["provenance"]["torch_version"] == torch.__version__
    assert data["provenance"]["torch_num_threads"] == 1
    assert len(data["points"]) == 2
    assert data["points"][0]["peak_live_bytes"] > 0


def test_gate_unchanged_passes(baseline):
    threads = torch.get_num_threads()
    result = run_gate(baseline_path=baseline, grid=SMALL_GRID)

    assert result.passed, result.render()
    assert len(result.rows) == 2 * 4
    assert {row.status for row in result.rows} == {"ok"}
    assert torch.get_num_threads() == threads


def test_gate_planted_quadratic_fails(baseline, monkeypatch):
    _plant_pairwise_tensor(monkeypatch)

    result = run_gate(baseline_path=baseline, grid=SMALL_GRID)

    assert not result.passed
    failures = "\n".join(result.failures)
    assert "convrec L=32 saved_bytes" in failures
    assert "convrec L=32 peak_live_bytes" in failures
    assert "regression" in result.render()


def test_gate_growth_fails(baseline):
    before = _edit_value(baseline, "convrec", 16, "flops", 1 / 1.06)

    result = run_gate(baseline_path=baseline, grid=SMALL_GRID)

    assert not result.passed
    assert len(result.failures) == 1
    assert "convrec L=16 flops" in result.failures[0]
    assert f"{before:,}" in result.failures[0]


def test_gate_growth_within_tolerance(baseline):
    _edit_value(baseline, "convrec", 16, "flops", 1 / 1.04)

    result = run_gate(baseline_path=baseline, grid=SMALL_GRID)

    assert result.passed, result.render()


def test_gate_drop_is_improvement(baseline):
    _edit_value(baseline, "convrec", 32, "saved_bytes", 1.5)

    result = run_gate(baseline_path=baseline, grid=SMALL_GRID)

    assert result.passed, result.render()
    assert len(result.improvements) == 1
    assert "convrec L=32 saved_bytes" in result.improvements[0]
    improved = [row for row in result.rows if row.status == "improvement"]
    assert [(row.seq_len, row.quantity) for row in improved] == [(32, "saved_bytes")]


def test_gate_missing_point(baseline):
    data = json.loads(baseline.read_text())
    data["points"] = [p for p in data["points"] if p["seq_len"] != 32]
    baseline.write_text(json.dumps(data))

    with pytest.raises(ConvbenchError, match=r"convrec L=32.*--update"):
        run_gate(baseline_path=baseline, grid=SMALL_GRID)


def test_gate_missing_file(tmp_path):
    with pytest.raises(ConvbenchError, match=r"not found.*--update"):
        run_gate(baseline_path=tmp_path / "absent.json", grid=SMALL_GRID)


def test_gate_other_settings(baseline):
    grid = GateGrid(models=("convrec",), seq_lens=(16, 32), batch_size=3, hidden_size=8,
                    num_candidates=11, num_items=50)
    with pytest.raises(ConvbenchError, match=r"batch_size 2 \(grid: 3\)"):
        run_gate(baseline_path=baseline, grid=grid)


def test_gate_invalid_baseline(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text("{not json")
    with pytest.raises(ConvbenchError, match="cannot read gate baseline"):
        run_gate(baseline_path=path, grid=SMALL_GRID)


def test_update_keeps_file_on_exponent_failure(baseline):
    before = baseline.read_text()

    result = run_gate(baseline_path=baseline, update=True, exponent_bound=0.01, grid=SMALL_GRID)

    assert not result.passed
    assert not result.updated
    assert baseline.read_text() == before


# --- exponents --------------------------------------------------------------------------------


def test_fit_exponent_power_law():
    seq_lens = [64, 128, 256, 512, 1024]
    assert fit_exponent(seq_lens, [3.0 * L**1.5 for L in seq_lens]) == pytest.approx(1.5)


def test_fit_exponent_one_length():
    with pytest.raises(ConvbenchError, match="two or more lengths"):
        fit_exponent([64, 64], [1.0, 2.0])


def test_exponent_quadratic_memory_fails():
    # Linear saved bytes, quadratic peak: only the peak breaks the bound.
    points = [{"model": "convrec", "seq_len": L, "peak_live_bytes": 1000 + L * L,
               "saved_bytes": 500 * L} for L in (64, 128, 256, 512, 1024)]

    exponents, failures = check_exponents(points, bound=1.15)

    assert exponents["peak_live_bytes"] > 1.8
    assert exponents["saved_bytes"] == pytest.approx(1.0)
    assert len(failures) == 1
    assert "convrec peak_live_bytes" in failures[0]


def test_exponent_linear_memory_passes():
    points = [{"model": "convrec", "seq_len": L, "peak_live_bytes": 10**6 + 4000 * L,
               "saved_bytes": 3000 * L} for L in (64, 128, 256, 512, 1024)]
    _, failures = check_exponents(points, bound=1.15)
    assert failures == []


# --- rendering and the command ----------------------------------------------------------------


def test_render_names_point_and_change(baseline):
    _edit_value(baseline, "convrec", 16, "params", 0.5)

    text = run_gate(baseline_path=baseline, grid=SMALL_GRID).render()

    row = next(line for line in text.splitlines() if "L=16" in line and "params" in line)
    model, point, quantity, baseline_value, current, change, status = row.split()
    assert model == "convrec"
    assert float(change.rstrip("%")) == pytest.approx(100.0, abs=0.1)
    assert status == "regression"
    assert "gate failed" in text


def _invoke(monkeypatch, result: GateResult | Exception, *args: str):
    calls = []

    def fake_run_gate(**kwargs):
        calls.append(kwargs)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(bench.gate_cli, "run_gate", fake_run_gate)
    app = typer.Typer()
    app.command()(gate_command)
    return CliRunner().invoke(app, list(args)), calls


def test_command_passes_options(monkeypatch, tmp_path):
    passing = GateResult(rows=[], exponents={}, tolerance=0.1, exponent_bound=1.3)
    outcome, calls = _invoke(monkeypatch, passing, "--baseline", str(tmp_path / "b.json"),
                             "--update", "--tolerance", "0.1", "--exponent-bound", "1.3")

    assert outcome.exit_code == 0, outcome.output
    assert calls == [{"baseline_path": tmp_path / "b.json", "update": True, "tolerance": 0.1,
                      "exponent_bound": 1.3}]


def test_command_failure_exit_code(monkeypatch):
    failing = GateResult(rows=[], exponents={}, tolerance=0.05, exponent_bound=1.15,
                         failures=["convrec L=64 flops grew"])
    outcome, _ = _invoke(monkeypatch, failing)

    assert outcome.exit_code == 1, outcome.output
    assert "FAIL: convrec L=64 flops grew" in outcome.output


def test_command_rejects_negative_tolerance(monkeypatch):
    passing = GateResult(rows=[], exponents={}, tolerance=0.05, exponent_bound=1.15)
    outcome, calls = _invoke(monkeypatch, passing, "--tolerance", "-0.1")

    assert outcome.exit_code == 2, outcome.output
    assert calls == []


def test_change_of_zero_baseline():
    assert math.isinf(GateRow("convrec", 8, "saved_bytes", 0, 10, "regression").change)
    assert GateRow("convrec", 8, "saved_bytes", 0, 0, "ok").change == 0.0
