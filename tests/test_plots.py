"""Scaling and accuracy figures are written for small synthetic tables."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.plots import plot_accuracy_vs_cost, plot_scaling, scaling_figures

LENGTHS = [16, 32, 64, 128]
PNG_SIGNATURE = b"\x89PNG"


def _sweep_frame(device: str = "cpu") -> pd.DataFrame:
    rows = []
    for model, exponent in (("convrec", 1), ("sasrec", 2)):
        for phase in ("train", "infer"):
            for length in LENGTHS:
                cost = float(length**exponent)
                status = "measured" if length < 128 else "timeout"
                rows.append({"model": model, "phase": phase, "seq_len": length, "batch_size": 1,
                             "hidden_size": 8, "device": device, "status": status,
                             "time_median_s": cost * 1e-4 if status == "measured" else None,
                             "peak_live_bytes": cost * 1e3 if status == "measured" else None,
                             "cuda_peak_bytes": cost * 2e3 if device == "cuda" else None,
                             "flops": cost * 1e6 if status == "measured" else None})
                rows.append({"model": model, "phase": phase, "seq_len": length, "batch_size": 1,
                             "hidden_size": 8, "device": device, "status": "estimated",
                             "peak_live_bytes": cost * 1.1e3, "flops": cost * 1e6})
    return pd.DataFrame(rows)


def test_plot_scaling_writes_png(tmp_path):
    paths = plot_scaling(_sweep_frame(), tmp_path)
    assert [path.name for path in paths] == ["scale_cpu_B1.png"]
    assert paths[0].read_bytes().startswith(PNG_SIGNATURE)


def test_plot_scaling_cuda_and_cpu(tmp_path):
    frame = pd.concat([_sweep_frame("cpu"), _sweep_frame("cuda")])
    paths = plot_scaling(frame, tmp_path)
    assert sorted(path.name for path in paths) == ["scale_cpu_B1.png", "scale_cuda_B1.png"]
    assert all(path.stat().st_size > 0 for path in paths)


def test_plot_scaling_empty_frame(tmp_path):
    assert plot_scaling(pd.DataFrame(), tmp_path) == []


def test_plot_scaling_panel_without_data(tmp_path):
    frame = _sweep_frame()
    frame = frame[frame["status"] == "estimated"]
    paths = plot_scaling(frame, tmp_path)
    assert paths[0].stat().st_size > 0


def test_plot_accuracy_vs_cost_writes_png(tmp_path):
    accuracy = pd.DataFrame({
        "model": ["convrec", "convrec", "sasrec", "sasrec"],
        "seq_len": [16, 32, 16, 32],
        "seed": [0, 0, 0, 0],
        "test_full_ndcg@10": [0.05, 0.06, 0.04, 0.07],
        "train_step_seconds": [0.01, 0.02, 0.01, 0.04],
        "peak_live_bytes": [1e6, 2e6, 1e6, 4e6],
    })
    path = plot_accuracy_vs_cost(accuracy, tmp_path / "accuracy.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_accuracy_without_costs(tmp_path):
    accuracy = pd.DataFrame({"model": ["convrec"], "seq_len": [16], "seed": [0],
                             "test_full_ndcg@10": [0.05]})
    path = plot_accuracy_vs_cost(accuracy, tmp_path / "accuracy.png")
    assert path.stat().st_size > 0


def _narrow_frame() -> pd.DataFrame:
    """Two lengths and costs that change little, so every panel spans less than a decade."""
    rows = []
    for model, scale in (("convrec", 1.0), ("sasrec", 1.3)):
        for phase in ("train", "infer"):
            for length in (16, 32):
                rows.append({"model": model, "phase": phase, "seq_len": length,
                             "batch_size": 1, "hidden_size": 8, "device": "cpu",
                             "status": "measured", "time_median_s": 2.2e-3 * scale,
                             "peak_live_bytes": 3e6 * scale * length / 16,
                             "flops": 2e9 * scale * length / 16})
    return pd.DataFrame(rows)


def _y_tick_labels(axes) -> list:
    """Return the tick labels drawn on the y axis inside its view, major and minor."""
    low, high = sorted(axes.get_ylim())
    labels = []
    for ticks in (axes.yaxis.get_major_ticks(), axes.yaxis.get_minor_ticks()):
        for tick in ticks:
            label = tick.label1
            if low <= tick.get_loc() <= high and label.get_visible() and label.get_text():
                labels.append(label)
    return labels


@pytest.mark.parametrize("frame", [_narrow_frame(), _sweep_frame()], ids=["narrow", "wide"])
def test_scaling_panels_label_y_axis(frame):
    figure = scaling_figures(frame)["scale_cpu_B1"]
    figure.draw_without_rendering()
    for axes in figure.axes:
        title = axes.get_title()
        labels = _y_tick_labels(axes)
        assert len(labels) >= 2, f"{title}: y labels {[label.get_text() for label in labels]}"
        boxes = sorted((label.get_window_extent() for label in labels), key=lambda box: box.y0)
        for lower, upper in zip(boxes, boxes[1:], strict=False):
            assert lower.y1 <= upper.y0, f"{title}: y tick labels overlap"
