import math

import numpy as np
import pytest
import torch

from convrec.errors import TrainingError
from convrec.metrics import count_above_and_tied, metrics_from_counts


def metrics_for_scores(scores, target_column, tie_rule="pessimistic"):
    scores = torch.as_tensor(scores, dtype=torch.float32)
    above, tied = count_above_and_tied(scores, torch.as_tensor(target_column))
    return metrics_from_counts(above.numpy(), tied.numpy(), tie_rule)


@pytest.mark.parametrize(("rank", "expected"), [(0, 1.0), (3, 0.430677), (9, 0.289065),
                                                (10, 0.0)])
def test_ndcg_at_10_by_rank(rank, expected):
    values = metrics_from_counts(np.array([rank]), np.array([0]))
    assert values["NDCG@10"][0] == pytest.approx(expected, abs=1e-6)


def test_hr_and_mrr_by_rank():
    values = metrics_from_counts(np.array([0, 4, 9, 19, 20]), np.zeros(5, dtype=int))
    assert values["HR@1"].tolist() == [1, 0, 0, 0, 0]
    assert values["HR@5"].tolist() == [1, 1, 0, 0, 0]
    assert values["HR@10"].tolist() == [1, 1, 1, 0, 0]
    assert values["HR@20"].tolist() == [1, 1, 1, 1, 0]
    assert values["MRR"][1] == pytest.approx(0.2)


def test_all_equal_scores_pessimistic():
    values = metrics_for_scores(np.zeros((1, 101)), [0])
    assert values["HR@10"][0] == 0.0
    assert values["NDCG@10"][0] == 0.0
    assert values["MRR"][0] == pytest.approx(1 / 101)


def test_all_equal_scores_expected():
    values = metrics_for_scores(np.zeros((1, 101)), [0], tie_rule="expected")
    assert values["HR@10"][0] == pytest.approx(0.099010, abs=1e-6)
    assert values["HR@1"][0] == pytest.approx(1 / 101)
    expected_ndcg = sum(1 / math.log2(rank + 2) for rank in range(10)) / 101
    assert values["NDCG@10"][0] == pytest.approx(expected_ndcg)


def test_target_slot_does_not_matter():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=101).astype(np.float32)
    scores[5] = scores[0]  # one tie with the target
    first = metrics_for_scores(scores[None, :], [0])
    moved = np.concatenate([scores[1:], scores[:1]])
    last = metrics_for_scores(moved[None, :], [100])
    for name in first:
        assert first[name][0] == last[name][0], name


def test_all_equal_target_last_slot():
    values = metrics_for_scores(np.zeros((1, 101)), [100])
    assert values["HR@10"][0] == 0.0


def test_exclusion_mask_skips_items():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0]])
    exclude = torch.tensor([[True, True, True, False, False]])
    above, tied = count_above_and_tied(scores, torch.tensor([3]), exclude)
    assert int(above[0]) == 0
    assert int(tied[0]) == 0


def test_nan_score_names_user():
    scores = torch.zeros((2, 5))
    scores[1, 2] = float("nan")
    with pytest.raises(TrainingError, match="NaN score during evaluation for user 17"):
        count_above_and_tied(scores, torch.zeros(2, dtype=torch.long), users=np.array([3, 17]))


def test_unknown_tie_rule_rejected():
    with pytest.raises(ValueError, match="unknown tie rule"):
        metrics_from_counts(np.array([0]), np.array([0]), "optimistic")
