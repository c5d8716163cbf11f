"""ConvRec: schedule, shapes, padding, the re-associated item encoder, and full ranking."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from convrec.data.batches import ScoringBatch
from convrec.data.schema import synthetic_meta
from convrec.errors import ConvbenchError
from convrec.models.convrec import ConvRec, ConvRecConfig, ItemEncoder
from convrec.models.layers import (
    DEFAULT_SCHEDULE,
    default_schedule,
    output_length,
    stride_product,
)
from convrec.models.registry import build_model

NUM_ITEMS = 30
HIDDEN = 16


def _meta(attribute_width=8, context_width=6):
    return synthetic_meta(num_items=NUM_ITEMS, attribute_width=attribute_width,
                          context_width=context_width, seed=1)


def _model(max_len=10, meta=None, **overrides):
    torch.manual_seed(0)
    settings = {"max_len": max_len, "hidden_size": HIDDEN, "num_heads": 2, **overrides}
    return ConvRec(ConvRecConfig(**settings), meta or _meta())


def _batch(meta, lengths, max_len, num_candidates=5, seed=0):
    """Left-padded profiles with the given numbers of items, zero context at padding."""
    generator = torch.Generator().manual_seed(seed)
    B = len(lengths)
    X = meta.context_width
    items = torch.randint(1, meta.num_items + 1, (B, max_len), generator=generator)
    lengths = torch.tensor(lengths)
    valid = torch.arange(max_len).unsqueeze(0) >= (max_len - lengths).unsqueeze(1)
    items = items * valid
    context = torch.rand(B, max_len, X, generator=generator) * valid.unsqueeze(-1)
    candidates = torch.randint(1, meta.num_items + 1, (B, num_candidates), generator=generator)
    return ScoringBatch(
        users=torch.arange(1, B + 1),
        profile_items=items,
        profile_context=context,
        candidate_items=candidates,
        candidate_context=torch.rand(B, X, generator=generator),
    )


def _with_padding_junk(batch):
    """Return a copy of `batch` with random values in the context rows of padded positions."""
    padded = (batch.profile_items == 0).unsqueeze(-1)
    junk = torch.rand(batch.profile_context.shape, generator=torch.Generator().manual_seed(9))
    context = torch.where(padded, junk * 100.0, batch.profile_context)
    return dataclasses.replace(batch, profile_context=context)


def _scores(model, batch):
    model.eval()
    with torch.no_grad():
        return model.score(batch)


# Schedule


def test_schedule_default_for_max_len_50():
    assert default_schedule(50) == DEFAULT_SCHEDULE


def test_schedule_extension_for_max_len_200():
    assert default_schedule(200) == DEFAULT_SCHEDULE + ((3, 3),)


@pytest.mark.parametrize("max_len", [1, 7, 50, 70, 71, 200, 1000, 5000])
def test_schedule_covers_max_len(max_len):
    schedule = default_schedule(max_len)
    assert stride_product(schedule) >= max_len
    length = max_len
    for kernel_size, stride in schedule:
        length = output_length(length, kernel_size, stride)
    assert length == 1


@pytest.mark.parametrize("schedule", [((1, 2),), ((0, 0),), ((3, 0),), (), ((2,),),
                                      ((2, 2, 2),), (("a", 2),)])
def test_schedule_invalid_rejected(schedule):
    with pytest.raises(ConvbenchError, match="schedule"):
        _model(schedule=schedule)


def test_schedule_user_set_used_as_given():
    model = _model(max_len=50, schedule=[[3, 2], [4, 4]])
    assert model.schedule == ((3, 2), (4, 4))
    assert len(model.stack.layers) == 2


def test_heads_not_dividing_hidden_rejected():
    with pytest.raises(ConvbenchError, match="num_heads"):
        _model(num_heads=3)


# Shapes and training


@pytest.mark.parametrize("max_len", [1, 7, 50, 200, 1000])
def test_score_shapes(max_len):
    meta = _meta()
    model = _model(max_len=max_len, meta=meta)
    batch = _batch(meta, [max_len, max_len // 2, 1], max_len)
    scores = _scores(model, batch)
    assert scores.shape == (3, 5)
    assert torch.isfinite(scores).all()
    with torch.no_grad():
        all_scores = model.score_all(batch)
    assert all_scores.shape == (3, NUM_ITEMS + 1)
    assert torch.isneginf(all_scores[:, 0]).all()


def test_loss_decreases_on_fixed_batch():
    meta = _meta()
    model = _model(max_len=10, meta=meta, dropout=0.0)
    batch = _batch(meta, [10, 6, 3, 1], 10, num_candidates=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


def test_loss_is_cross_entropy_on_column_zero():
    meta = _meta()
    model = _model(meta=meta).eval()
    batch = _batch(meta, [10, 4], 10)
    with torch.no_grad():
        expected = F.cross_entropy(model.score(batch), torch.zeros(2, dtype=torch.long))
        assert model.loss(batch).item() == pytest.approx(expected.item())


def test_skip_weights_start_at_half():
    model = _model(max_len=200)
    for layer in model.stack.layers:
        assert layer.input_skip_weight.item() == 0.5
        assert layer.carried_skip_weight.item() == 0.5


def test_registry_builds_convrec():
    model = build_model("convrec", _meta(), hidden_size=HIDDEN, num_heads=4)
    assert isinstance(model, ConvRec)
    assert model.training_mode == "prefix"


# Padding


def test_padding_mask_ignores_padded_context():
    meta = _meta()
    model = _model(meta=meta, padding_mask=True)
    batch = _batch(meta, [3, 7, 1], 10)
    torch.testing.assert_close(_scores(model, _with_padding_junk(batch)), _scores(model, batch))


def test_no_padding_mask_ignores_padded_context():
    meta = _meta()
    model = _model(meta=meta, padding_mask=False)
    batch = _batch(meta, [3, 7, 1], 10)
    torch.testing.assert_close(_scores(model, _with_padding_junk(batch)), _scores(model, batch))


@pytest.mark.parametrize("padding_mask", [True, False])
def test_padding_rows_of_tables_ignored(padding_mask):
    """Junk in the id-0 rows of the embedding and attribute tables leaves scores unchanged."""
    meta = _meta()
    model = _model(meta=meta, padding_mask=padding_mask)
    batch = _batch(meta, [3, 7, 0], 10)
    before = _scores(model, batch)
    with torch.no_grad():
        model.item_encoder.id_embedding.weight[0] = 5.0
        model.item_encoder.item_attributes[0] = 7.0
    torch.testing.assert_close(_scores(model, batch), before)


def test_padding_mask_ignores_padding_length():
    """With the mask, a profile scores the same however much padding is in front of it."""
    meta = _meta()
    schedule = ((2, 2), (5, 5), (7, 7))
    short = _model(max_len=20, meta=meta, padding_mask=True, schedule=schedule)
    long = _model(max_len=40, meta=meta, padding_mask=True, schedule=schedule)
    long.load_state_dict(short.state_dict())
    batch = _batch(meta, [3, 12, 1], 20)
    padded = dataclasses.replace(
        batch,
        profile_items=F.pad(batch.profile_items, (20, 0)),
        profile_context=F.pad(batch.profile_context, (0, 0, 20, 0)),
    )
    torch.testing.assert_close(_scores(long, padded), _scores(short, batch))


def test_no_padding_mask_depends_on_padding_length():
    """Without the mask (the authors' behaviour), windows of padding enter the average."""
    meta = _meta()
    schedule = ((2, 2), (5, 5))
    model = _model(max_len=20, meta=meta, padding_mask=False, schedule=schedule)
    batch = _batch(meta, [3], 20)
    padded = dataclasses.replace(
        batch,
        profile_items=F.pad(batch.profile_items, (20, 0)),
        profile_context=F.pad(batch.profile_context, (0, 0, 20, 0)),
    )
    assert not torch.allclose(_scores(model, padded), _scores(model, batch))


@pytest.mark.parametrize("padding_mask", [True, False])
def test_all_padding_profile_finite(padding_mask):
    meta = _meta()
    model = _model(meta=meta, padding_mask=padding_mask)
    batch = _batch(meta, [0, 0], 10)
    assert torch.isfinite(_scores(model, batch)).all()
    with torch.no_grad():
        all_scores = model.score_all(batch)
    assert torch.isfinite(all_scores[:, 1:]).all()


# Time gaps


def test_profile_gaps_first_item_is_one():
    meta = _meta()
    model = _model(meta=meta)
    batch = _batch(meta, [2, 3], 3)
    valid = batch.profile_items != 0
    gaps = model._profile_gaps(batch, valid)
    G = len(meta.gap_columns)
    times = batch.profile_context[..., list(meta.gap_columns)]
    torch.testing.assert_close(gaps[0, 1], torch.ones(G))
    torch.testing.assert_close(gaps[0, 2], times[0, 2] - times[0, 1])
    torch.testing.assert_close(gaps[1, 0], torch.ones(G))
    torch.testing.assert_close(gaps[1, 2], times[1, 2] - times[1, 1])


def test_candidate_gaps_empty_profile_is_one():
    meta = _meta()
    model = _model(meta=meta)
    batch = _batch(meta, [0, 4], 5)
    gaps = model._candidate_gaps(batch)
    times = batch.candidate_context[:, list(meta.gap_columns)]
    last = batch.profile_context[1, -1, list(meta.gap_columns)]
    torch.testing.assert_close(gaps[0], torch.ones(len(meta.gap_columns)))
    torch.testing.assert_close(gaps[1], times[1] - last)


# Full ranking and the re-associated encoder


@pytest.mark.parametrize("padding_mask", [True, False])
def test_score_all_matches_score(padding_mask):
    meta = _meta()
    model = _model(meta=meta, padding_mask=padding_mask).eval()
    batch = _batch(meta, [10, 5, 1, 0], 10, num_candidates=7)
    with torch.no_grad():
        all_scores = model.score_all(batch, chunk_size=4)
        scores = model.score(batch)
    torch.testing.assert_close(all_scores.gather(1, batch.candidate_items), scores)


def _reference_encoding(encoder: ItemEncoder, ids, context):
    """The item encoder written out layer by layer, with no re-association."""
    D = encoder.hidden_size
    parts = []
    if encoder.attribute_projection is not None:
        parts.append(encoder.attribute_projection(encoder.item_attributes[ids]))
    if encoder.context_projection is not None:
        parts.append(encoder.context_projection(context.expand(*ids.shape, -1)))
    embedded = encoder.id_embedding(ids)
    if not parts:
        return encoder.output_projection(embedded)
    fused = encoder.dropout(encoder.fusion(torch.cat(parts, dim=-1)))
    assert fused.shape[-1] == 4 * D
    return encoder.output_projection(torch.cat([embedded, fused], dim=-1))


@pytest.mark.parametrize("widths", [(8, 6), (0, 6), (8, 0), (0, 0), (40, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_encoder_matches_reference(widths, training):
    """The re-associated encoder equals the literal one, dropout masks included."""
    meta = _meta(*widths)
    model = _model(meta=meta, dropout=0.3)
    encoder = model.item_encoder.train(training)
    batch = _batch(meta, [10, 4, 0], 10)
    groups = ([batch.profile_items, batch.candidate_items],
              [batch.profile_context, batch.candidate_context.unsqueeze(1)])
    with torch.random.fork_rng():
        torch.manual_seed(5)
        profile, candidates = encoder(*groups)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        expected_profile = _reference_encoding(encoder, *[group[0] for group in groups])
        expected_candidates = _reference_encoding(encoder, *[group[1] for group in groups])
    torch.testing.assert_close(profile, expected_profile, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(candidates, expected_candidates, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("widths", [(0, 6), (8, 0), (0, 0)])
def test_missing_attributes_or_context(widths):
    meta = _meta(*widths)
    model = _model(meta=meta)
    batch = _batch(meta, [10, 2], 10)
    model.train()
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        all_scores = model.score_all(batch)
        scores = model.score(batch)
    torch.testing.assert_close(all_scores.gather(1, batch.candidate_items), scores)
