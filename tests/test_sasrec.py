"""Tests of the SASRec baseline on tiny synthetic data."""

from __future__ import annotations

import copy

import pytest
import torch

from baselines.attention import attend, causal_padding_mask
from baselines.sasrec import SASRec, SASRecConfig
from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.data.schema import synthetic_meta
from convrec.errors import ConvbenchError
from convrec.models.registry import build_model

NUM_ITEMS = 20
MAX_LEN = 12
TOLERANCE = 1e-5


def tiny_model(**overrides) -> SASRec:
    settings = dict(max_len=MAX_LEN, hidden_size=8, num_blocks=2, num_heads=2, dropout=0.0)
    settings.update(overrides)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(**settings), synthetic_meta(num_items=NUM_ITEMS))
    return model.eval()


def position_batch(lengths=(8, 5, 2, 0), L=8, seed=0) -> PositionBatch:
    """Build a left-padded batch whose row b has lengths[b] profile items and their successors."""
    generator = torch.Generator().manual_seed(seed)
    B = len(lengths)
    window = torch.zeros(B, L + 1, dtype=torch.long)  # profile plus the item after its last
    for row, length in enumerate(lengths):
        if length > 0:
            window[row, L - length:] = torch.randint(1, NUM_ITEMS + 1, (length + 1,),
                                                     generator=generator)
    profile = window[:, :-1]
    targets = profile != 0
    positives = window[:, 1:] * targets
    negatives = torch.randint(1, NUM_ITEMS + 1, (B, L), generator=generator) * targets
    context = torch.zeros(B, L, 6)
    return PositionBatch(users=torch.arange(1, B + 1), profile_items=profile,
                         profile_context=context, positive_items=positives,
                         negative_items=negatives, target_context=context.clone())


def scoring_batch(profile: torch.Tensor, candidates: torch.Tensor) -> ScoringBatch:
    B, L = profile.shape
    return ScoringBatch(users=torch.arange(1, B + 1), profile_items=profile,
                        profile_context=torch.zeros(B, L, 6), candidate_items=candidates,
                        candidate_context=torch.zeros(B, 6))


def random_candidates(B: int, C: int = 5, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, NUM_ITEMS + 1, (B, C), generator=generator)


def test_score_shape():
    batch = position_batch()
    scores = tiny_model().score(scoring_batch(batch.profile_items, random_candidates(4, C=5)))
    assert scores.shape == (4, 5)


def test_position_logits_shape():
    positive, negative = tiny_model().position_logits(position_batch(L=8))
    assert positive.shape == (4, 8)
    assert negative.shape == (4, 8)


def test_score_all_shape_and_padding_column():
    batch = position_batch()
    scores = tiny_model().score_all(scoring_batch(batch.profile_items, None))
    assert scores.shape == (4, NUM_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()


def test_score_without_candidates_scores_all():
    batch = position_batch()
    model = tiny_model()
    scoring = scoring_batch(batch.profile_items, None)
    assert torch.equal(model.score(scoring), model.score_all(scoring))


def test_score_all_matches_score():
    batch = position_batch()
    model = tiny_model()
    every_item = torch.arange(1, NUM_ITEMS + 1).expand(4, -1)
    expected = model.score(scoring_batch(batch.profile_items, every_item))
    actual = model.score_all(scoring_batch(batch.profile_items, None))[:, 1:]
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_loss_finite():
    loss = tiny_model(dropout=0.2).train().loss(position_batch())
    assert loss.dim() == 0
    assert torch.isfinite(loss)


def test_loss_gradients_finite():
    model = tiny_model(dropout=0.2).train()
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


def test_loss_ignores_positions_without_target():
    model = tiny_model()
    batch = position_batch()
    changed = copy.deepcopy(batch)
    no_target = batch.positive_items == 0
    changed.negative_items[no_target] = 3
    assert torch.equal(model.loss(batch), model.loss(changed))


def test_loss_without_targets_zero():
    loss = tiny_model().loss(position_batch(lengths=(0, 0)))
    assert loss.item() == 0.0


def test_fused_matches_reference():
    fused = tiny_model(fused_attention=True)
    reference = tiny_model(fused_attention=False)
    reference.load_state_dict(fused.state_dict())
    batch = position_batch()
    scoring = scoring_batch(batch.profile_items, random_candidates(4))
    torch.testing.assert_close(fused.score(scoring), reference.score(scoring),
                               atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(fused.position_logits(batch), reference.position_logits(batch),
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_attend_paths_agree_with_masks():
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    valid = torch.tensor([[False, False, True, True, True], [True] * 5])
    allowed = causal_padding_mask(valid)
    fused = attend(q, k, v, allowed, fused=True)
    reference = attend(q, k, v, allowed, fused=False)
    torch.testing.assert_close(fused, reference, atol=TOLERANCE, rtol=TOLERANCE)


def test_attend_empty_row_is_zero():
    q, k, v = (torch.randn(1, 1, 2, 4) for _ in range(3))
    allowed = torch.tensor([[True, True], [False, False]]).view(1, 1, 2, 2)
    for fused in (True, False):
        output = attend(q, k, v, allowed, fused=fused)
        assert torch.equal(output[0, 0, 1], torch.zeros(4)), fused
        assert torch.isfinite(output).all(), fused


def test_no_leak_from_later_positions():
    model = tiny_model()
    batch = position_batch(lengths=(8, 6), L=8)
    positive, negative = model.position_logits(batch)
    generator = torch.Generator().manual_seed(7)
    for t in range(7):
        changed = copy.deepcopy(batch)
        later = slice(t + 1, None)
        shape = changed.profile_items[:, later].shape
        changed.profile_items[:, later] = torch.randint(1, NUM_ITEMS + 1, shape,
                                                        generator=generator)
        changed.positive_items[:, later] = torch.randint(1, NUM_ITEMS + 1, shape,
                                                         generator=generator)
        changed.negative_items[:, later] = torch.randint(1, NUM_ITEMS + 1, shape,
                                                         generator=generator)
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
    scores = model.score(scoring_batch(batch.profile_items, batch.positive_items[:, -1:]))
    torch.testing.assert_close(scores[:, 0], positive[:, -1], atol=TOLERANCE, rtol=TOLERANCE)


def test_left_padding_length_invariance():
    model = tiny_model()
    history = torch.tensor([4, 9, 1, 17])
    short = torch.zeros(1, 6, dtype=torch.long)
    long = torch.zeros(1, MAX_LEN, dtype=torch.long)
    short[0, -4:] = history
    long[0, -4:] = history
    candidates = random_candidates(1)
    torch.testing.assert_close(model.score(scoring_batch(short, candidates)),
                               model.score(scoring_batch(long, candidates)),
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_all_padding_profile_scores_finite():
    model = tiny_model()
    profile = torch.zeros(2, 8, dtype=torch.long)
    assert torch.isfinite(model.score(scoring_batch(profile, random_candidates(2)))).all()
    assert torch.isfinite(model.score_all(scoring_batch(profile, None))[:, 1:]).all()


def test_padded_positions_finite_in_training_mode():
    model = tiny_model(dropout=0.2).train()
    positive, negative = model.position_logits(position_batch())
    assert torch.isfinite(positive).all()
    assert torch.isfinite(negative).all()


def test_profile_longer_than_max_len_rejected():
    profile = torch.ones(1, MAX_LEN + 1, dtype=torch.long)
    with pytest.raises(ConvbenchError, match="max_len"):
        tiny_model().score(scoring_batch(profile, random_candidates(1)))


def test_heads_must_divide_hidden_size():
    with pytest.raises(ConvbenchError, match="num_heads"):
        tiny_model(hidden_size=8, num_heads=3)


def test_registry_builds_sasrec():
    model = build_model("sasrec", synthetic_meta(num_items=NUM_ITEMS), hidden_size=8,
                        num_heads=2, max_len=MAX_LEN)
    assert isinstance(model, SASRec)
    assert model.training_mode == "positions"


def test_padding_embeddings_start_at_zero():
    model = tiny_model()
    assert torch.equal(model.item_embedding.weight[0], torch.zeros(8))
    assert torch.equal(model.position_embedding.weight[0], torch.zeros(8))
