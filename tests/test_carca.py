"""Tests of the CARCA baseline on tiny synthetic data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from baselines.carca import CARCA, CARCAConfig
from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.data.schema import DatasetMeta, synthetic_meta
from convrec.errors import ConvbenchError
from convrec.models.registry import build_model

NUM_ITEMS = 20
ATTRIBUTE_WIDTH = 4
CONTEXT_WIDTH = 3
TOLERANCE = 1e-5


def tiny_model(attribute_width=ATTRIBUTE_WIDTH, context_width=CONTEXT_WIDTH, **overrides) -> CARCA:
    settings = dict(max_len=12, hidden_size=8, num_blocks=2, num_heads=2, dropout=0.0)
    settings.update(overrides)
    meta = synthetic_meta(num_items=NUM_ITEMS, attribute_width=attribute_width,
                          context_width=context_width)
    torch.manual_seed(0)
    model = CARCA(CARCAConfig(**settings), meta)
    # Move the score layer off its N(0, 0.01) start so that score differences are well above
    # the comparison tolerance.
    with torch.no_grad():
        model.score_layer.weight.normal_(std=1.0)
    return model.eval()


def position_batch(lengths=(8, 5, 2, 0), L=8, X=CONTEXT_WIDTH, seed=0) -> PositionBatch:
    """Build a left-padded batch whose row b has lengths[b] profile items and their successors."""
    generator = torch.Generator().manual_seed(seed)
    B = len(lengths)
    window = torch.zeros(B, L + 1, dtype=torch.long)  # profile plus the item after its last
    for row, length in enumerate(lengths):
        if length > 0:
            window[row, L - length:] = torch.randint(1, NUM_ITEMS + 1, (length + 1,),
                                                     generator=generator)
    window_context = torch.rand(B, L + 1, X, generator=generator) * (window != 0).unsqueeze(-1)
    profile = window[:, :-1]
    targets = profile != 0
    positives = window[:, 1:] * targets
    negatives = torch.randint(1, NUM_ITEMS + 1, (B, L), generator=generator) * targets
    return PositionBatch(users=torch.arange(1, B + 1), profile_items=profile,
                         profile_context=window_context[:, :-1],
                         positive_items=positives, negative_items=negatives,
                         target_context=window_context[:, 1:] * targets.unsqueeze(-1))


def scoring_batch(profile: torch.Tensor, profile_context: torch.Tensor,
                  candidates: torch.Tensor | None, seed: int = 2) -> ScoringBatch:
    generator = torch.Generator().manual_seed(seed)
    B, _, X = profile_context.shape
    return ScoringBatch(users=torch.arange(1, B + 1), profile_items=profile,
                        profile_context=profile_context, candidate_items=candidates,
                        candidate_context=torch.rand(B, X, generator=generator))


def random_candidates(B: int, C: int = 5, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, NUM_ITEMS + 1, (B, C), generator=generator)


def default_scoring() -> ScoringBatch:
    batch = position_batch()
    return scoring_batch(batch.profile_items, batch.profile_context, random_candidates(4))


def test_score_shape():
    assert tiny_model().score(default_scoring()).shape == (4, 5)


def test_position_logits_shape():
    positive, negative = tiny_model().position_logits(position_batch(L=8))
    assert positive.shape == (4, 8)
    assert negative.shape == (4, 8)


def test_score_all_shape_and_padding_column():
    scoring = default_scoring()
    scoring.candidate_items = None
    scores = tiny_model().score_all(scoring)
    assert scores.shape == (4, NUM_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()


def test_score_all_matches_score():
    model = tiny_model()
    scoring = default_scoring()
    scoring.candidate_items = torch.arange(1, NUM_ITEMS + 1).expand(4, -1)
    expected = model.score(scoring)
    actual = model.score_all(scoring, chunk_size=7)[:, 1:]
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_loss_finite():
    loss = tiny_model(dropout=0.5).train().loss(position_batch())
    assert loss.dim() == 0
    assert torch.isfinite(loss)


def test_loss_gradients_finite():
    model = tiny_model(dropout=0.5).train()
    model.loss(position_batch()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_loss_decreases_on_tiny_task():
    model = tiny_model().train()
    batch = position_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    initial = model.loss(batch).item()
    for _ in range(40):
        optimiser.zero_grad()
        model.loss(batch).backward()
        optimiser.step()
    final = model.loss(batch).item()
    assert final < 0.5 * initial, (initial, final)


def test_fused_matches_reference():
    fused = tiny_model(fused_attention=True)
    reference = tiny_model(fused_attention=False)
    reference.load_state_dict(fused.state_dict())
    scoring = default_scoring()
    batch = position_batch()
    torch.testing.assert_close(fused.score(scoring), reference.score(scoring),
                               atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(fused.position_logits(batch), reference.position_logits(batch),
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_no_leak_from_later_positions():
    model = tiny_model()
    batch = position_batch(lengths=(8, 6), L=8)
    positive, negative = model.position_logits(batch)
    generator = torch.Generator().manual_seed(7)
    for t in range(7):
        changed = copy.deepcopy(batch)
        later = slice(t + 1, None)
        shape = changed.profile_items[:, later].shape
        for items in (changed.profile_items, changed.positive_items, changed.negative_items):
            items[:, later] = torch.randint(1, NUM_ITEMS + 1, shape, generator=generator)
        for context in (changed.profile_context, changed.target_context):
            context[:, later] = torch.rand(*shape, CONTEXT_WIDTH, generator=generator)
        changed_positive, changed_negative = model.position_logits(changed)
        torch.testing.assert_close(changed_positive[:, : t + 1], positive[:, : t + 1],
                                   atol=TOLERANCE, rtol=TOLERANCE, msg=f"position {t}")
        torch.testing.assert_close(changed_negative[:, : t + 1], negative[:, : t + 1],
                                   atol=TOLERANCE, rtol=TOLERANCE, msg=f"position {t}")


def test_logits_depend_on_earlier_positions():
    model = tiny_model()
    batch = position_batch(lengths=(8,), L=8)
    changed = copy.deepcopy(batch)
    changed.profile_items[0, 2] = changed.profile_items[0, 2] % NUM_ITEMS + 1
    positive, _ = model.position_logits(batch)
    changed_positive, _ = model.position_logits(changed)
    assert not torch.allclose(positive[0, 2:], changed_positive[0, 2:])


def test_training_last_position_matches_score():
    model = tiny_model()
    batch = position_batch(lengths=(8, 5, 2), L=8)
    positive, _ = model.position_logits(batch)
    scoring = ScoringBatch(users=batch.users, profile_items=batch.profile_items,
                           profile_context=batch.profile_context,
                           candidate_items=batch.positive_items[:, -1:],
                           candidate_context=batch.target_context[:, -1])
    torch.testing.assert_close(model.score(scoring)[:, 0], positive[:, -1],
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_padded_context_ignored():
    model = tiny_model()
    scoring = default_scoring()
    changed = copy.deepcopy(scoring)
    padded = scoring.profile_items == 0
    changed.profile_context[padded] = 5.0
    torch.testing.assert_close(model.score(changed), model.score(scoring),
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_left_padding_length_invariance():
    model = tiny_model()
    generator = torch.Generator().manual_seed(4)
    history = torch.tensor([4, 9, 1, 17])
    history_context = torch.rand(4, CONTEXT_WIDTH, generator=generator)
    scores = []
    for L in (6, 11):
        profile = torch.zeros(1, L, dtype=torch.long)
        context = torch.zeros(1, L, CONTEXT_WIDTH)
        profile[0, -4:] = history
        context[0, -4:] = history_context
        scores.append(model.score(scoring_batch(profile, context, random_candidates(1))))
    torch.testing.assert_close(scores[0], scores[1], atol=TOLERANCE, rtol=TOLERANCE)


def test_loss_ignores_positions_without_target():
    model = tiny_model()
    batch = position_batch()
    changed = copy.deepcopy(batch)
    no_target = batch.positive_items == 0
    changed.negative_items[no_target] = 3
    changed.target_context[no_target] = 5.0
    assert torch.equal(model.loss(batch), model.loss(changed))


def test_all_padding_profile_scores_finite():
    model = tiny_model()
    profile = torch.zeros(2, 8, dtype=torch.long)
    context = torch.zeros(2, 8, CONTEXT_WIDTH)
    scoring = scoring_batch(profile, context, random_candidates(2))
    assert torch.isfinite(model.score(scoring)).all()
    scoring.candidate_items = None
    assert torch.isfinite(model.score_all(scoring)[:, 1:]).all()


def test_padded_positions_finite_in_training_mode():
    model = tiny_model(dropout=0.5).train()
    positive, negative = model.position_logits(position_batch())
    assert torch.isfinite(positive).all()
    assert torch.isfinite(negative).all()


@pytest.mark.parametrize(("attribute_width", "context_width"), [(0, 0), (0, 3), (4, 0)])
def test_zero_feature_widths(attribute_width, context_width):
    model = tiny_model(attribute_width=attribute_width, context_width=context_width)
    batch = position_batch(X=context_width)
    scoring = scoring_batch(batch.profile_items, batch.profile_context, random_candidates(4))
    assert model.score(scoring).shape == (4, 5)
    assert torch.isfinite(model.loss(batch))


def test_context_width_mismatch_rejected():
    batch = position_batch(X=CONTEXT_WIDTH + 1)
    with pytest.raises(ConvbenchError, match="context width"):
        tiny_model().loss(batch)


def test_attribute_rows_mismatch_rejected():
    meta = DatasetMeta(name="broken", num_users=0, num_items=NUM_ITEMS,
                       item_attributes=np.zeros((NUM_ITEMS, 2), dtype=np.float32),
                       context_names=(), gap_columns=())
    with pytest.raises(ConvbenchError, match="item_attributes"):
        CARCA(CARCAConfig(hidden_size=8, num_heads=2), meta)


def test_candidate_product_off_scores():
    model = tiny_model(candidate_product=False)
    assert torch.isfinite(model.score(default_scoring())).all()


def test_attributes_not_in_state_dict():
    assert "item_attributes" not in tiny_model().state_dict()


def test_registry_builds_carca():
    meta = synthetic_meta(num_items=NUM_ITEMS)
    model = build_model("carca", meta, hidden_size=8, num_heads=2)
    assert isinstance(model, CARCA)
    assert model.training_mode == "positions"
