import json
import math

import numpy as np
import pytest
import torch

from convrec.data.split import make_split
from convrec.errors import ConvbenchError, TrainingError
from convrec.experiment import ModelSpec, run_one
from convrec.models.registry import build_model, get_model_class, model_names
from convrec.trainer import Trainer, evaluate
from tests.synthetic import clustered_dataset, cyclic_dataset

TINY = {"hidden_size": 16, "max_len": 10, "num_negatives": 20, "batch_size": 16,
        "learning_rate": 1e-2, "weight_decay": 0.0, "eval_every": 1, "patience": 100,
        "dropout": 0.1}


@pytest.fixture(scope="module")
def data_and_split():
    data = cyclic_dataset()
    return data, make_split(data, seed=0, num_eval_negatives=30)


def train(data, split, checkpoint, max_epochs, model_name="convrec"):
    torch.manual_seed(0)
    overrides = dict(TINY, max_epochs=max_epochs)
    if model_name != "convrec":
        overrides.pop("num_negatives")
        overrides["num_heads"] = 2
    model = build_model(model_name, data.meta(), **overrides)
    trainer = Trainer(model, split, seed=0, checkpoint_path=checkpoint, progress=False)
    return model, trainer.fit()


def test_resume_matches_uninterrupted(tmp_path, data_and_split):
    data, split = data_and_split
    _, whole = train(data, split, tmp_path / "whole.pt", max_epochs=4)
    train(data, split, tmp_path / "parts.pt", max_epochs=2)
    _, resumed = train(data, split, tmp_path / "parts.pt", max_epochs=4)
    assert resumed.epochs_run == 4
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    assert resumed.best_valid_score == whole.best_valid_score


@pytest.mark.parametrize("model_name", ["convrec", "sasrec", "carca"])
def test_training_beats_random(model_name):
    data = clustered_dataset()
    split = make_split(data, seed=0, num_eval_negatives=30)
    model, result = train(data, split, None, max_epochs=10, model_name=model_name)
    metrics = evaluate(model, split, "test", full=False)
    # Random ranking of 1 target among 31 candidates gives HR@10 = 10 / 31.
    assert metrics["HR@10"] > 0.6, result.history


def test_nan_loss_names_step(data_and_split, monkeypatch):
    data, split = data_and_split
    model = build_model("convrec", data.meta(), **TINY)
    monkeypatch.setattr(model, "loss", lambda batch: torch.tensor(float("nan")))
    trainer = Trainer(model, split, seed=0, progress=False)
    with pytest.raises(TrainingError, match="non-finite training loss nan at epoch 1, step 1"):
        trainer.fit()


def test_nan_score_writes_no_result(tmp_path, data_and_split, monkeypatch):
    data, split = data_and_split
    from convrec.models import convrec as convrec_module

    original_score = convrec_module.ConvRec.score

    def nan_score(self, batch):
        if self.training:
            return original_score(self, batch)
        scores = torch.zeros(batch.candidate_items.shape)
        scores[:, 3] = float("nan")
        return scores

    monkeypatch.setattr(convrec_module.ConvRec, "score", nan_score)
    spec = ModelSpec.parse("convrec")
    with pytest.raises(TrainingError, match=r"NaN score during evaluation for user \d+"):
        run_one(spec, data, split, seed=0, work_dir=tmp_path, device=torch.device("cpu"),
                extra_overrides=dict(TINY, max_epochs=1), progress=False)
    assert not list(tmp_path.rglob("result.json"))


def test_finished_run_is_reused(tmp_path, data_and_split):
    data, split = data_and_split
    spec = ModelSpec.parse("convrec")
    kwargs = dict(seed=0, work_dir=tmp_path, device=torch.device("cpu"),
                  extra_overrides=dict(TINY, max_epochs=1), progress=False)
    first = run_one(spec, data, split, **kwargs)
    (result_path,) = tmp_path.rglob("result.json")
    stored = json.loads(result_path.read_text())
    stored["metrics"]["test_sampled"]["HR@10"] = -1.0
    result_path.write_text(json.dumps(stored))
    second = run_one(spec, data, split, **kwargs)
    assert first["metrics"]["test_sampled"]["HR@10"] != -1.0
    assert second["metrics"]["test_sampled"]["HR@10"] == -1.0


def test_model_spec_overrides():
    spec = ModelSpec.parse("convrec:padding_mask=true,max_len=200,dropout=0.2")
    assert dict(spec.overrides) == {"padding_mask": True, "max_len": 200, "dropout": 0.2}
    assert spec.label == "convrec(padding_mask=True,max_len=200,dropout=0.2)"


def test_model_spec_unknown_model():
    with pytest.raises(ConvbenchError, match="unknown model 'gru4rec'; valid models are: "
                                             "convrec, sasrec, carca"):
        ModelSpec.parse("gru4rec")


def test_sampled_metrics_use_stored_candidates(data_and_split):
    data, split = data_and_split
    assert np.all(split.test_candidates[1:, 0] == split.test_item[1:])


def test_result_of_other_data_rejected(tmp_path, data_and_split):
    data, split = data_and_split
    spec = ModelSpec.parse("convrec")
    kwargs = dict(seed=0, work_dir=tmp_path, device=torch.device("cpu"),
                  extra_overrides=dict(TINY, max_epochs=1), progress=False)
    run_one(spec, data, split, **kwargs)
    other_split = make_split(data, seed=1, num_eval_negatives=30)
    other_split.fingerprint = "0" * 64
    with pytest.raises(ConvbenchError, match="was computed on another version of dataset"):
        run_one(spec, data, other_split, **kwargs)


def test_damaged_result_rejected(tmp_path, data_and_split):
    data, split = data_and_split
    spec = ModelSpec.parse("convrec")
    kwargs = dict(seed=0, work_dir=tmp_path, device=torch.device("cpu"),
                  extra_overrides=dict(TINY, max_epochs=1), progress=False)
    run_one(spec, data, split, **kwargs)
    (result_path,) = tmp_path.rglob("result.json")
    result_path.write_text("")
    with pytest.raises(ConvbenchError, match="is damaged .*; delete it to train that run again"):
        run_one(spec, data, split, **kwargs)


def test_label_lists_command_line_settings(tmp_path, data_and_split):
    data, split = data_and_split
    result = run_one(ModelSpec.parse("convrec"), data, split, seed=0, work_dir=tmp_path,
                     device=torch.device("cpu"), extra_overrides=dict(TINY, max_epochs=1),
                     progress=False)
    assert "max_epochs=1" in result["model"]
    assert result["split_fingerprint"] == split.fingerprint


def test_report_rejects_other_dataset_same_name(tmp_path, data_and_split):
    from convrec.accuracy_report import write_accuracy_report

    data, split = data_and_split
    result = run_one(ModelSpec.parse("convrec"), data, split, seed=0, work_dir=tmp_path,
                     device=torch.device("cpu"), extra_overrides=dict(TINY, max_epochs=1),
                     progress=False)
    write_accuracy_report([result], tmp_path / "out")
    other = dict(result, split_fingerprint="f" * 64, seed=1)
    with pytest.raises(ConvbenchError, match="contains results of another dataset also named"):
        write_accuracy_report([other], tmp_path / "out")


def test_raised_patience_continues_run(tmp_path, data_and_split):
    data, split = data_and_split
    checkpoint = tmp_path / "run.pt"
    train(data, split, checkpoint, max_epochs=2)
    saved = torch.load(checkpoint, weights_only=False)
    saved["state"]["stopped_early"] = True
    saved["state"]["bad_evals"] = 1
    torch.save(saved, checkpoint)

    _, result = train(data, split, checkpoint, max_epochs=4)
    assert result.epochs_run == 4


def test_finished_run_continues_with_more_epochs(tmp_path, data_and_split, monkeypatch):
    data, split = data_and_split
    # Keep one label for both calls, as when a model's default max_epochs is raised.
    monkeypatch.setattr(ModelSpec, "label", property(lambda self: self.name))
    kwargs = dict(seed=0, work_dir=tmp_path / "runs", device=torch.device("cpu"),
                  progress=False)
    spec = ModelSpec.parse("convrec")
    run_one(spec, data, split, extra_overrides=dict(TINY, max_epochs=2), **kwargs)
    longer = run_one(spec, data, split, extra_overrides=dict(TINY, max_epochs=4), **kwargs)
    assert longer["train"]["epochs_run"] == 4
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 1

    direct = run_one(spec, data, split, extra_overrides=dict(TINY, max_epochs=4),
                     **dict(kwargs, work_dir=tmp_path / "direct"))
    assert longer["metrics"] == direct["metrics"]


@pytest.mark.parametrize("name", model_names())
def test_default_patience_never_stops(name):
    """The authors' codes of all three models train every epoch; the defaults must too."""
    config = get_model_class(name).config_class()
    evaluations = math.ceil(config.max_epochs / config.eval_every)
    assert config.patience >= evaluations
