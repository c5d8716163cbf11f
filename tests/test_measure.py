"""Tests of the deterministic measurement layer: FLOPs, byte counters, estimates, timing."""

from __future__ import annotations

import psutil
import pytest
import torch
import torch.nn.functional as F

from bench.estimate import estimate_point
from bench.flops import attention_backward_flops, attention_forward_flops, count_flops
from bench.measure import (
    SavedBytesCounter,
    build_profiled_model,
    make_batch,
    measure_deterministic,
    provenance,
    summarize_times,
    time_point,
    track_live_bytes,
)
from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.errors import ConvbenchError

MODELS = ("convrec", "sasrec", "carca")
QUANTITIES = ("params", "flops", "saved_bytes", "peak_live_bytes")
# Small synthetic sizes that keep each measured step well under a second.
TINY = dict(batch_size=2, hidden_size=8, num_items=40, num_candidates=11)

FLOAT32_BYTES = 4


# --- FLOPs ------------------------------------------------------------------------------------


def test_flops_bare_attention_forward():
    query = torch.randn(2, 3, 16, 8)
    key = torch.randn(2, 3, 24, 8)
    value = torch.randn(2, 3, 24, 8)

    with torch.no_grad():
        counted = count_flops(lambda: F.scaled_dot_product_attention(query, key, value))

    # Q K^T and the weights times V, 2 FLOPs per multiply-add: 2 * 2 * B * H * Lq * Lk * Dh.
    assert counted == 2 * 2 * (2 * 3 * 16 * 24 * 8)


def test_flops_bare_attention_backward():
    query = torch.randn(2, 3, 16, 8, requires_grad=True)
    key = torch.randn(2, 3, 24, 8, requires_grad=True)
    value = torch.randn(2, 3, 24, 8, requires_grad=True)
    mask = torch.ones(16, 24, dtype=torch.bool).tril()

    def step():
        F.scaled_dot_product_attention(query, key, value, attn_mask=mask).sum().backward()

    forward = 2 * 2 * (2 * 3 * 16 * 24 * 8)
    # The flash backward recomputes Q K^T and forms four gradients: 5 products.
    backward = 5 * 2 * (2 * 3 * 16 * 24 * 8)
    assert count_flops(step) == forward + backward


def test_flops_formulas_reject_mismatch():
    with pytest.raises(ValueError, match="incompatible attention shapes"):
        attention_forward_flops((2, 3, 16, 8), (2, 3, 24, 4), (2, 3, 24, 8))


def test_flops_backward_formula_ratio():
    shapes = ((1, 2, 32, 16), (1, 2, 32, 16), (1, 2, 32, 16))
    assert attention_backward_flops(*shapes) == 2.5 * attention_forward_flops(*shapes)


def test_flops_sasrec_superlinear():
    counts = {
        seq_len: measure_deterministic("sasrec", seq_len=seq_len, batch_size=1, hidden_size=16,
                                       phase="train", num_items=40)["flops"]
        for seq_len in (128, 256)
    }
    # Linear layers double with L, attention quadruples; at small D attention dominates.
    assert counts[256] / counts[128] > 2.2


# --- byte counters ----------------------------------------------------------------------------


def test_live_bytes_known_allocations():
    with track_live_bytes() as tracker:
        a = torch.empty(1000)
        b = a + 1
        del a
        c = b.view(10, 100)  # a view: no new storage
        d = torch.empty(500)
        live_with_b_and_d = tracker.live_bytes
        del b, c, d
        live_after_free = tracker.live_bytes

    assert tracker.peak_bytes == 2000 * FLOAT32_BYTES
    assert live_with_b_and_d == 1500 * FLOAT32_BYTES
    assert live_after_free == 0


def test_live_bytes_ignores_existing():
    existing = torch.zeros(1000)

    with track_live_bytes() as tracker:
        existing.add_(1.0)
        existing.view(10, 100).mul_(2.0)

    assert tracker.peak_bytes == 0


def test_live_bytes_counts_torch_tensor():
    with track_live_bytes() as tracker:
        created = torch.tensor([1.0, 2.0, 3.0])
        peak = tracker.peak_bytes
    del created

    assert peak == 3 * FLOAT32_BYTES


def test_saved_bytes_each_storage_once():
    x = torch.randn(10, requires_grad=True)
    counter = SavedBytesCounter(exclude=[x.untyped_storage()])

    with counter.counting():
        y = x.exp()  # saves its output y
        z = y.sin()  # saves y again: not counted twice
        w = z * x  # saves z (new) and x (excluded)

    assert counter.saved_bytes == 2 * 10 * FLOAT32_BYTES
    assert w.shape == (10,)


# --- measured points --------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", MODELS)
def test_measure_repeats_exactly(model_name):
    first = measure_deterministic(model_name, seq_len=20, phase="train", **TINY)
    second = measure_deterministic(model_name, seq_len=20, phase="train", **TINY)
    for quantity in QUANTITIES:
        assert first[quantity] == second[quantity], quantity


@pytest.mark.parametrize("model_name", MODELS)
def test_measure_infer_saves_nothing(model_name):
    point = measure_deterministic(model_name, seq_len=20, phase="infer", **TINY)
    assert point["saved_bytes"] == 0
    assert point["peak_live_bytes"] > 0
    assert point["flops"] > 0


def test_measure_rejects_unknown_phase():
    with pytest.raises(ConvbenchError, match="unknown phase"):
        measure_deterministic("sasrec", seq_len=8, phase="eval", **TINY)


def test_measure_keeps_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    measure_deterministic("sasrec", seq_len=8, phase="train", **TINY)
    assert torch.equal(torch.rand(3), expected)


def test_make_batch_prefix_training():
    model = build_profiled_model("convrec", seq_len=12, hidden_size=8, num_items=40)
    batch = make_batch(model, batch_size=3, seq_len=12, num_candidates=7, phase="train")

    assert isinstance(batch, ScoringBatch)
    assert batch.profile_items.shape == (3, 12)
    assert batch.candidate_items.shape == (3, 7)
    assert batch.profile_context.shape == (3, 12, model.meta.context_width)
    assert int(batch.profile_items.min()) >= 1


def test_make_batch_position_training():
    model = build_profiled_model("sasrec", seq_len=12, hidden_size=8, num_items=40)
    batch = make_batch(model, batch_size=3, seq_len=12, phase="train")

    assert isinstance(batch, PositionBatch)
    assert batch.positive_items.shape == (3, 12)
    assert batch.target_context.shape == (3, 12, model.meta.context_width)


def test_make_batch_inference_scores():
    model = build_profiled_model("sasrec", seq_len=12, hidden_size=8, num_items=40)
    batch = make_batch(model, batch_size=3, seq_len=12, num_candidates=5, phase="infer")

    assert isinstance(batch, ScoringBatch)
    assert batch.candidate_items.shape == (3, 5)


def test_build_adjusts_heads():
    model = build_profiled_model("carca", seq_len=8, hidden_size=8, num_items=40)
    # CARCA's default of 3 heads does not divide 8; 2 is the largest head count that does.
    assert model.config.num_heads == 2


# --- estimates --------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["train", "infer"])
@pytest.mark.parametrize("model_name", MODELS)
def test_estimate_matches_measure(model_name, phase):
    measured = measure_deterministic(model_name, seq_len=30, phase=phase, **TINY)
    estimated = estimate_point(model_name, seq_len=30, phase=phase, **TINY)
    for quantity in QUANTITIES:
        assert estimated[quantity] == measured[quantity], quantity


def test_estimate_large_point_allocates_nothing():
    process = psutil.Process()
    rss_before = process.memory_info().rss

    point = estimate_point("sasrec", seq_len=4096, batch_size=128, hidden_size=64,
                           phase="train")

    # The step would hold tens of GiB; the estimate itself stays far below 1 GiB.
    assert point["peak_live_bytes"] > 16 * 2**30
    assert process.memory_info().rss - rss_before < 2**30


# --- timing and provenance --------------------------------------------------------------------


def test_summarize_times_odd_count():
    summary = summarize_times([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary["time_median_s"] == 3.0
    assert summary["time_iqr_s"] == 2.0
    assert summary["time_min_s"] == 1.0
    assert summary["time_max_s"] == 5.0


def test_summarize_times_even_count():
    summary = summarize_times([4.0, 1.0, 3.0, 2.0])
    assert summary["time_median_s"] == 2.5
    # Inclusive quartiles of 1, 2, 3, 4: 1.75 and 3.25.
    assert summary["time_iqr_s"] == pytest.approx(1.5)


def test_summarize_times_empty():
    with pytest.raises(ValueError, match="no timed repetitions"):
        summarize_times([])


def test_time_point_repeats():
    result = time_point("convrec", seq_len=10, phase="train", warmup=1, repeats=3, **TINY)
    assert result["repeats"] == 3
    assert 0 < result["time_min_s"] <= result["time_median_s"] <= result["time_max_s"]


def test_time_point_rejects_no_repeats():
    with pytest.raises(ConvbenchError, match="repeats"):
        time_point("convrec", seq_len=10, phase="train", repeats=0, **TINY)


def test_provenance_fields():
    record = provenance()
    assert record["torch_version"] == torch.__version__
    assert record["torch_num_threads"] == torch.get_num_threads()
    assert record["utc_time"].endswith("+00:00")
    assert record["hostname"]
