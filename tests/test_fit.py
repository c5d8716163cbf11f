"""Scaling fits on synthetic costs with known exponents."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.fit import (
    BELOW_RANGE,
    COMBINED_STATUS,
    LOW_R2_NOTE,
    crossover_length,
    crossovers,
    fill_with_estimates,
    fit_exponent,
    scaling_exponents,
    upper_half,
)
from convrec.errors import ConvbenchError

LENGTHS = [16, 32, 64, 128, 256, 512, 1024]


def _series(model: str, costs, *, phase="train", batch_size=1, status="measured",
            metric="time_median_s") -> pd.DataFrame:
    return pd.DataFrame({
        "model": model, "phase": phase, "batch_size": batch_size, "hidden_size": 8,
        "device": "cpu", "status": status, "seq_len": LENGTHS[:len(costs)], metric: costs,
    })


def test_fit_linear_cost():
    slope, intercept, r2 = fit_exponent(LENGTHS, [3.0 * length for length in LENGTHS])
    assert slope == pytest.approx(1.0)
    assert intercept == pytest.approx(math.log(3.0))
    assert r2 == pytest.approx(1.0)


def test_fit_quadratic_cost():
    slope, intercept, r2 = fit_exponent(LENGTHS, [0.5 * length**2 for length in LENGTHS])
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(math.log(0.5))
    assert r2 == pytest.approx(1.0)


def test_fit_noisy_cost():
    rng = np.random.default_rng(0)
    lengths = np.array(LENGTHS, dtype=float)
    costs = 2.0 * lengths**2 * np.exp(rng.normal(0.0, 0.05, lengths.size))
    slope, _, r2 = fit_exponent(lengths, costs)
    assert abs(slope - 2.0) < 0.1
    assert 0.95 < r2 < 1.0


def test_fit_constant_cost():
    slope, _, r2 = fit_exponent([16, 32, 64], [5.0, 5.0, 5.0])
    assert slope == pytest.approx(0.0)
    assert r2 == pytest.approx(1.0)


def test_fit_equal_large_costs():
    # Equal costs whose logarithms do not cancel exactly in floating point still fit R^2 = 1.
    slope, _, r2 = fit_exponent([8, 16, 32], [305480.0] * 3)
    assert slope == pytest.approx(0.0, abs=1e-12)
    assert r2 == 1.0


@pytest.mark.parametrize("lengths, costs", [
    ([16], [1.0]),
    ([16, 16], [1.0, 2.0]),
    ([16, 32], [1.0, 0.0]),
    ([16, 32], [1.0, float("nan")]),
    ([0, 32], [1.0, 2.0]),
    ([16, 32, 64], [1.0, 2.0]),
])
def test_fit_rejects_invalid_input(lengths, costs):
    with pytest.raises(ConvbenchError):
        fit_exponent(lengths, costs)


def test_upper_half_keeps_log_upper_range():
    assert upper_half([16, 32, 64, 128, 256]) == [64, 128, 256]


def test_upper_half_keeps_three_lengths():
    assert upper_half([16, 4096, 32]) == [16, 32, 4096]
    assert upper_half([16, 32, 64, 128]) == [32, 64, 128]


def test_scaling_exponents_per_series():
    frame = pd.concat([
        _series("convrec", [2.0 * length for length in LENGTHS]),
        _series("sasrec", [0.01 * length**2 for length in LENGTHS]),
    ])
    table = scaling_exponents(frame, metrics=["time_median_s"]).set_index("model")
    assert table.loc["convrec", "slope"] == pytest.approx(1.0)
    assert table.loc["sasrec", "slope"] == pytest.approx(2.0)
    assert table.loc["sasrec", "min_len"] == 128
    assert table.loc["sasrec", "n_points"] == 4


def test_scaling_exponents_uses_upper_half():
    # A fixed overhead dominates the small lengths, but the quadratic term dominates the upper half.
    costs = [1e4 + length**2 for length in LENGTHS]
    table = scaling_exponents(_series("sasrec", costs), metrics=["time_median_s"])
    assert table["slope"].iloc[0] > 1.5


def test_top_slope_of_fixed_plus_linear():
    # A fixed cost equal to the linear part at L=256 pulls both slopes below 1, the fitted one
    # over 128..1024 further than the one between 512 and 1024 (log2(1280 / 768) = 0.74).
    costs = [256.0 + length for length in LENGTHS]
    row = scaling_exponents(_series("convrec", costs), metrics=["time_median_s"]).iloc[0]
    assert row["top_slope"] == pytest.approx(math.log2((256 + 1024) / (256 + 512)))
    assert row["slope"] < row["top_slope"] < 1.0


def test_top_slope_of_power_law():
    costs = [0.01 * length**2 for length in LENGTHS]
    row = scaling_exponents(_series("sasrec", costs), metrics=["time_median_s"]).iloc[0]
    assert row["top_slope"] == pytest.approx(2.0)


def test_scaling_exponents_skips_other_statuses():
    frame = _series("convrec", [1.0, 2.0, 4.0], status="estimated")
    assert scaling_exponents(frame, metrics=["time_median_s"]).empty


def test_scaling_exponents_skips_missing_values():
    frame = _series("convrec", [float("nan"), 0.0, float("nan")])
    assert scaling_exponents(frame, metrics=["time_median_s"]).empty


@pytest.mark.parametrize("costs", [[1.0, 2.0], [1.0, 2.0, float("nan")], [1.0]])
def test_scaling_exponents_too_few_lengths(costs):
    table = scaling_exponents(_series("convrec", costs), metrics=["time_median_s"])
    usable = sum(1 for cost in costs if not math.isnan(cost))
    assert len(table) == 1
    assert math.isnan(table["slope"].iloc[0])
    assert math.isnan(table["r2"].iloc[0])
    assert table["note"].iloc[0].startswith(f"not available: {usable} length(s)")


def test_scaling_exponents_flags_low_r2():
    # Costs that jump up and down around a flat line, so no power law explains them.
    costs = [1.0, 9.0, 1.5, 8.0, 1.0, 9.0, 1.2]
    table = scaling_exponents(_series("convrec", costs), metrics=["time_median_s"])
    assert table["r2"].iloc[0] < 0.9
    assert table["note"].iloc[0] == LOW_R2_NOTE


def test_scaling_exponents_good_fit_has_no_note():
    costs = [2.0 * length for length in LENGTHS[:3]]
    table = scaling_exponents(_series("convrec", costs), metrics=["time_median_s"])
    assert table["slope"].iloc[0] == pytest.approx(1.0)
    assert table["note"].iloc[0] == ""


def test_crossover_between_lines():
    # 100 L = L^2 / 2 at L = 200, between the measured 128 and 256; both costs are straight
    # lines in log-log space, so the interpolation is exact.
    frame = pd.concat([
        _series("convrec", [100.0 * length for length in LENGTHS]),
        _series("sasrec", [0.5 * length**2 for length in LENGTHS]),
    ])
    found = crossover_length(frame, "time_median_s")
    assert found == pytest.approx(200.0)


def test_crossover_below_range():
    frame = pd.concat([
        _series("convrec", [1.0 * length for length in LENGTHS]),
        _series("sasrec", [10.0 * length**2 for length in LENGTHS]),
    ])
    assert crossover_length(frame, "time_median_s") == BELOW_RANGE


def test_crossover_never():
    frame = pd.concat([
        _series("convrec", [1e6 * length for length in LENGTHS]),
        _series("sasrec", [1.0 * length for length in LENGTHS]),
    ])
    assert crossover_length(frame, "time_median_s") is None


def test_crossover_rejects_mixed_settings():
    frame = pd.concat([
        _series("convrec", [1.0, 2.0], batch_size=1),
        _series("sasrec", [1.0, 2.0], batch_size=32),
    ])
    with pytest.raises(ConvbenchError):
        crossover_length(frame, "time_median_s")


def test_crossovers_table():
    frame = pd.concat([
        _series("convrec", [100.0 * length for length in LENGTHS]),
        _series("sasrec", [0.5 * length**2 for length in LENGTHS]),
    ])
    table = crossovers(frame, metrics=["time_median_s"])
    assert len(table) == 1
    assert table["crossover"].iloc[0] == pytest.approx(200.0)


def test_fill_with_estimates_extends_series():
    measured = _series("sasrec", [1.0, 4.0], metric="flops")
    estimated = _series("sasrec", [9.0, 9.0, 16.0, 25.0], status="estimated", metric="flops")
    combined = fill_with_estimates(pd.concat([measured, estimated]))
    by_length = combined.set_index("seq_len")["flops"]
    # Measured values win at 16 and 32; the estimates fill 64 and 128 only.
    assert by_length.to_dict() == {16: 1.0, 32: 4.0, 64: 16.0, 128: 25.0}
    assert set(combined["status"]) == {COMBINED_STATUS}


def test_fill_with_estimates_skips_measured_series():
    measured = _series("sasrec", [1.0, 4.0], metric="flops")
    estimated = _series("sasrec", [1.0], status="estimated", metric="flops")
    assert fill_with_estimates(pd.concat([measured, estimated])).empty
