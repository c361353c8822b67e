"""The training loop: best-epoch restore, early stopping, resume, reproducibility."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import SMALL_NET
from prodmatch import ConfigError, TrainConfig, load_pairs, read_catalogue, split_pairs
from prodmatch.models import create_model
from prodmatch.models.concat_mlp import ConcatMLP, ConcatMLPParams
from prodmatch.training import CHECKPOINT_FILE, train_network


@pytest.fixture(scope="module")
def setup(synth_dir):
    cat = read_catalogue(synth_dir)
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    train, valid, _ = split_pairs(pairs, seed=0)
    features = torch.from_numpy(cat.item_features(list(cat.modalities)))
    return cat, train, valid, features


class Snapshots:
    """Records the network's weights at the end of every epoch."""

    def __init__(self, net, stop_after=None):
        self.net, self.stop_after, self.states = net, stop_after, {}

    def on_epoch_start(self, epoch, epochs, batches):
        pass

    def on_batch_end(self, loss):
        pass

    def on_epoch_end(self, record):
        self.states[record.epoch] = copy.deepcopy(self.net.state_dict())
        if record.epoch == self.stop_after:
            raise KeyboardInterrupt  # a kill right after the epoch's checkpoint


def _net(features, seed=0):
    torch.manual_seed(seed)
    return ConcatMLP(int(features.shape[1]), ConcatMLPParams(hidden=32, nlayers=2))


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_best_epoch_weights_are_restored(setup):
    _, train, valid, features = setup
    # Validation labels inverted: the better the model learns train, the worse validation gets, so the best
    # epoch is early and the final weights differ from it.
    flipped = valid.subset(np.arange(len(valid)))
    flipped.target = 1.0 - flipped.target
    net = _net(features)
    snaps = Snapshots(net)
    cfg = TrainConfig(epochs=6, batch_size=128, patience=None, seed=0)
    result = train_network(net, features, train, flipped, cfg, lr=0.01, callback=snaps)
    assert result.best_epoch < 6
    assert _equal(net.state_dict(), snaps.states[result.best_epoch])
    assert not _equal(net.state_dict(), snaps.states[6])
    best = max(result.history, key=lambda h: h.valid_pr_auc)
    assert best.epoch == result.best_epoch


def test_early_stopping(setup):
    _, train, valid, features = setup
    flipped = valid.subset(np.arange(len(valid)))
    flipped.target = 1.0 - flipped.target
    cfg = TrainConfig(epochs=30, batch_size=128, patience=2, seed=0)
    result = train_network(_net(features), features, train, flipped, cfg, lr=0.01)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2


def test_resume_matches_an_uninterrupted_run(setup, tmp_path):
    _, train, valid, features = setup
    cfg = TrainConfig(epochs=4, batch_size=128, patience=None, seed=3)
    full = _net(features)
    full_result = train_network(full, features, train, valid, cfg, lr=0.01)

    killed = _net(features)
    with pytest.raises(KeyboardInterrupt):
        train_network(
            killed,
            features,
            train,
            valid,
            cfg,
            lr=0.01,
            checkpoint_dir=tmp_path,
            callback=Snapshots(killed, stop_after=2),
        )
    resumed = _net(features, seed=99)  # fresh weights: everything must come from the checkpoint
    result = train_network(resumed, features, train, valid, cfg, lr=0.01, checkpoint_dir=tmp_path, resume=True)
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == full_result.best_epoch
    assert _equal(resumed.state_dict(), full.state_dict())


def test_resume_refuses_a_different_run(setup, tmp_path):
    _, train, valid, features = setup
    cfg = TrainConfig(epochs=1, batch_size=128, seed=0)
    train_network(_net(features), features, train, valid, cfg, lr=0.01, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="different run"):
        train_network(_net(features), features, train, valid, cfg, lr=0.5, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train_network(_net(features), features, train, valid, cfg, lr=0.01, checkpoint_dir=tmp_path / "x", resume=True)


def test_seed_makes_training_reproducible(setup):
    cat, train, valid, _ = setup
    cfg = TrainConfig(epochs=2, batch_size=256, seed=5)
    a = create_model("item-mlp", **SMALL_NET).fit(cat, train, valid, cfg)
    b = create_model("item-mlp", **SMALL_NET).fit(cat, train, valid, cfg)
    np.testing.assert_array_equal(a.predict_proba(cat, valid), b.predict_proba(cat, valid))


@pytest.mark.parametrize(
    ("name", "params", "floor"), [("concat-mlp", {"hidden": 64, "nlayers": 2}, 0.7), ("siamese", {}, 0.9)]
)
def test_model_learns_on_synthetic_data(medium_dir, name, params, floor):
    cat = read_catalogue(medium_dir)
    train, valid, _ = split_pairs(load_pairs(medium_dir / "train.parquet", cat, require_target=True), seed=0)
    model = create_model(name, **params).fit(
        cat, train, valid, TrainConfig(epochs=8, batch_size=256, patience=None, seed=0)
    )
    assert model.result_.best_score > floor  # chance is the positive rate, about 0.48


def test_auto_precision_never_picks_bfloat16_where_the_kernels_are_held_below_amx(monkeypatch):
    """bfloat16 pays on AMX tiles only; with the kernels held to AVX2 (make test-avx2) it would be emulated,
    many times slower, so auto picks float32 there whatever the CPU reports."""
    import torch

    from prodmatch.training import bf16_pays, resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert bf16_pays() and resolve_precision("auto") == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert bf16_pays()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not bf16_pays() and resolve_precision("auto") == "fp32"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert not bf16_pays()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not bf16_pays() and resolve_precision("bf16") == "bf16"  # asked for: kept


class _StopInSecondNetwork:
    """Interrupts training after the first stacked network has finished and the second has run one epoch."""

    def __init__(self) -> None:
        self.networks = 0

    def on_epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.networks += epoch == 1
        if self.networks == 2 and epoch == 2:
            raise KeyboardInterrupt

    def on_batch_end(self, loss: float) -> None: ...
    def on_epoch_end(self, record) -> None: ...


def test_default_model_resumes_to_the_same_model(synth_dir, tmp_path, caplog):
    """gbdt keeps each finished fold network, and the running one's epochs: an interrupted run continues with
    resume=True and ends with the model an uninterrupted run makes; a finished run keeps no resume folder."""
    from prodmatch import predict, train
    from prodmatch.training import RESUME_DIR, resumable

    params = {"n_estimators": 40, "stack_epochs": 3}
    cfg = TrainConfig(seed=4, hard_negatives=0)
    full = train(synth_dir, tmp_path / "full", model="gbdt", params=params, config=cfg)
    with pytest.raises(KeyboardInterrupt):
        train(synth_dir, tmp_path / "cut", model="gbdt", params=params, config=cfg, callback=_StopInSecondNetwork())
    resume = tmp_path / "cut" / RESUME_DIR / "siamese"
    assert resumable(tmp_path / "cut")
    assert (resume / "fold0" / "fold.json").exists() and (resume / "fold1.epochs" / CHECKPOINT_FILE).exists()
    other = {**params, "stack_epochs": 2}  # another run's settings: refused, and the run stays resumable
    with pytest.raises(ConfigError, match="from a different run"):
        train(synth_dir, tmp_path / "cut", model="gbdt", params=other, config=cfg, resume=True)
    with caplog.at_level("INFO"):
        resumed = train(synth_dir, tmp_path / "cut", model="gbdt", params=params, config=cfg, resume=True)
    said = caplog.text
    assert "siamese fold 1 of 2 taken from the interrupted run" in said  # not trained again
    assert "resumed from" in said and "after epoch 1" in said  # the second network went on from its epoch
    assert not (tmp_path / "cut" / RESUME_DIR).exists() and not resumable(tmp_path / "cut")
    assert resumed.metrics["test"]["pr_auc"] == full.metrics["test"]["pr_auc"]
    a = predict(tmp_path / "full", synth_dir, synth_dir / "test.parquet")
    b = predict(tmp_path / "cut", synth_dir, synth_dir / "test.parquet")
    np.testing.assert_array_equal(a["target"].to_numpy(), b["target"].to_numpy())
    with pytest.raises(ConfigError, match="no checkpoint"):  # nothing left to resume
        train(synth_dir, tmp_path / "cut", model="gbdt", params=params, config=cfg, resume=True)
