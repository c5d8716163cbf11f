"""pytest-benchmark timings of one training step of each model at a few sizes.

Not part of the default test run (testpaths is tests/); run with `nox -s benchmark` or
`pytest benchmarks --benchmark-only`. Timings on a shared machine are noisy: compare ratios taken
in one run, not numbers across runs.
"""

import pytest

from bench.measure import build_profiled_model, make_batch, make_optimizer, run_step

SIZES = [(50, 32), (200, 32), (800, 8)]  # (L, B)
HIDDEN_SIZE = 64


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize("model_name", ["convrec", "sasrec", "carca"])
@pytest.mark.parametrize(("seq_len", "batch_size"), SIZES, ids=[f"L{L}-B{B}" for L, B in SIZES])
def test_train_step(benchmark, model_name, seq_len, batch_size):
    model = build_profiled_model(model_name, seq_len=seq_len, hidden_size=HIDDEN_SIZE)
    batch = make_batch(model, batch_size=batch_size, seq_len=seq_len, phase="train")
    optimizer = make_optimizer(model)
    run_step(model, batch, "train", optimizer)  # warm-up outside the timed rounds

    benchmark.pedantic(run_step, args=(model, batch, "train", optimizer), rounds=5,
                       warmup_rounds=1)
    benchmark.extra_info.update(model=model_name, seq_len=seq_len, batch_size=batch_size,
                                hidden_size=HIDDEN_SIZE)
