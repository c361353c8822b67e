"""The training loop for pairwise networks: batches gathered by index, per-epoch validation,
a true copy of the best epoch's weights, early stopping and resumable checkpoints.

Batches are gathered with ``index_select`` from one (N, F) item-feature tensor, so there is no per-pair
Python and no DataLoader: a step costs what the network costs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prodmatch.atomic import atomic_path
from prodmatch.config import INFERENCE_BATCH, TrainConfig, auto_batch_size
from prodmatch.errors import ConfigError
from prodmatch.evaluation import pr_auc
from prodmatch.pairs import PairSet
from prodmatch.text.encoder import resolve_device

__all__ = [
    "EpochRecord",
    "TrainCallback",
    "TrainResult",
    "bf16_pays",
    "default_threads",
    "resolve_precision",
    "score_logits",
    "sigmoid",
    "train_network",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
RESUME_DIR = "resume"  # what a model made of several trainings keeps to resume: gbdt's finished fold networks


def resumable(run_dir: str | Path) -> bool:
    """Whether an interrupted training left ``run_dir`` something ``--resume`` continues from: a network's epoch
    checkpoint, or the fold networks a ``gbdt`` run finished."""
    run_dir = Path(run_dir)
    resume = run_dir / RESUME_DIR
    return (run_dir / CHECKPOINT_FILE).exists() or (resume.is_dir() and any(resume.iterdir()))


@dataclass
class EpochRecord:
    """One epoch's numbers, as kept in history.json."""

    epoch: int
    train_loss: float
    valid_loss: float
    valid_pr_auc: float
    seconds: float
    pairs_per_second: float
    improved: bool
    candidates_average_precision: float | None = None  # the catalogue job's validation candidates


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    best_logits: np.ndarray | None = field(default=None, repr=False)  # the validation logits of the best epoch
    # the catalogue job's, when validation candidates were given: its best epoch, score, weights and logits
    candidates_best_epoch: int | None = None
    candidates_best_score: float | None = None
    candidates_state: dict | None = field(default=None, repr=False)
    candidates_logits: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict:
        """What fitting did, for metrics.json."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "train_seconds": self.seconds,
        }


class TrainCallback(Protocol):
    """Progress hooks; the CLI implements them with progress bars, the library only logs."""

    def on_epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...
    def on_batch_end(self, loss: float) -> None: ...
    def on_epoch_end(self, record: EpochRecord) -> None: ...


def bf16_pays() -> bool:
    """Whether this CPU has AMX tiles that the kernels may use, where bfloat16 matrix products run much faster
    than float32. Kernels held below AMX (``ONEDNN_MAX_CPU_ISA`` without AMX, ``ATEN_CPU_CAPABILITY`` below
    AVX-512, as ``make test-avx2`` holds them) would emulate bfloat16, many times slower: no."""
    try:
        if not torch.cpu._is_amx_tile_supported():
            return False
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # an older torch, or a CPU it cannot query
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa not in ("", "ALL", "DEFAULT") and "AMX" not in isa:
        return False
    return capability.upper().startswith("AVX512")


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where :func:`bf16_pays`, else ``fp32``; others unchanged."""
    if precision == "auto":
        return "bf16" if bf16_pays() else "fp32"
    return precision


def default_threads() -> int:
    """Every core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def inference(net: nn.Module, bf16: bool = False):
    """``net`` in eval mode, under inference mode, in bfloat16 autocast only where asked. ``Module.eval`` walks
    every submodule (about 0.1 ms for a siamese network, more than a served pair's arithmetic), so it runs only
    when the network is in training mode; an autocast that is off is not entered at all."""
    if net.training:
        net.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        yield


def score_logits(
    net: nn.Module,
    features: torch.Tensor,
    left: np.ndarray,
    right: np.ndarray,
    batch_size: int = INFERENCE_BATCH,
    *,
    bf16: bool = False,
) -> np.ndarray:
    """Logits of ``net`` for pairs of rows of ``features``, in eval mode, in large batches.

    Args:
        bf16: run the network's matrix products in bfloat16 (CPU autocast; AMX where the CPU has it).

    Returns:
        (M,) float32.
    """
    out = np.empty(len(left), dtype=np.float32)
    lt = torch.from_numpy(np.asarray(left, dtype=np.int64)).to(features.device)
    rt = torch.from_numpy(np.asarray(right, dtype=np.int64)).to(features.device)
    with inference(net, bf16):
        for start in range(0, len(left), batch_size):
            sl = slice(start, start + batch_size)
            a = features.index_select(0, lt[sl])
            b = features.index_select(0, rt[sl])
            out[sl] = net(a, b).float().cpu().numpy()
    return out


# ------------------------------------------------------------------------------------- the shared loop parts
# Both training loops (train_network for the networks, FineTunedTextModel.fit for the transformers) keep the best
# epoch the same way and checkpoint the same way: these are those rules, once.


@dataclass
class Best:
    """The best epoch of one monitored score: the score, the epoch, a copy of the weights and what goes with
    them (``extra``: the validation logits...). ``higher_better`` says which way is better."""

    higher_better: bool = True
    score: float = float("nan")
    epoch: int | None = None
    state: dict | None = None
    extra: object = None

    def __post_init__(self) -> None:
        if self.score != self.score:  # nan: nothing seen yet
            self.score = -math.inf if self.higher_better else math.inf

    def offer(self, score: float, epoch: int, module: nn.Module, extra: object = None) -> bool:
        """Keep ``module``'s weights (a true copy, not a view of live ones) if ``score`` beats the best; say so."""
        if not (score > self.score if self.higher_better else score < self.score):
            return False
        self.score, self.epoch, self.extra = score, epoch, extra
        self.state = copy.deepcopy(module.state_dict())
        return True


@dataclass
class Checkpoint:
    """``checkpoint.pt`` of a run: written atomically after every epoch, read back with ``weights_only=True``
    (tensors and plain data only: nothing is unpickled), and refused when it is from a different run (another
    ``fingerprint``: model, data sizes, settings)."""

    path: Path | None
    fingerprint: dict

    def save(self, state: dict) -> None:
        if self.path is not None:
            save_checkpoint(self.path, {**state, "fingerprint": self.fingerprint})

    def load(self, device: torch.device | str = "cpu") -> dict:
        if self.path is None or not self.path.exists():
            raise ConfigError(f"--resume: no checkpoint at {self.path}; start the run without --resume")
        state = torch.load(self.path, weights_only=True, map_location=device)
        saved = state.get("fingerprint") or {}
        if saved != self.fingerprint:
            diff = {k: (saved.get(k), v) for k, v in self.fingerprint.items() if saved.get(k) != v}
            raise ConfigError(
                f"--resume: the checkpoint in {self.path} is from a different run: {diff} "
                "(checkpoint, now); resume with the same data and settings, or start afresh"
            )
        return state


def train_network(
    net: nn.Module,
    features: torch.Tensor,
    train: PairSet,
    valid: PairSet,
    config: TrainConfig,
    lr: float,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callback: TrainCallback | None = None,
    fingerprint: dict | None = None,
    scorer: Callable[..., np.ndarray] | None = None,
    modality_dropout: float = 0.0,
    dims: list[int] | None = None,
    weight: np.ndarray | None = None,
    candidates: PairSet | None = None,
) -> TrainResult:
    """Train ``net`` on labelled pairs with Adam and BCE-with-logits; leave it holding the best epoch's weights.

    Args:
        net: maps (B, F), (B, F) item features to (B,) logits.
        features: (N, F) float32 item features of the catalogue the pairs index into.
        train, valid: labelled pairs.
        config: epochs, batch size, patience, monitor, seed.
        lr: learning rate.
        checkpoint_dir: where ``checkpoint.pt`` is written after every epoch (atomically).
        resume: continue from the checkpoint in ``checkpoint_dir``.
        callback: progress hooks.
        fingerprint: facts about the run (model, data sizes) that a resumed run must share.
        scorer: ``scorer(net, features, left, right, batch_size)`` -> logits for validation; ``score_logits``
            in the configured precision by default.
        modality_dropout: in training batches, each item's modalities are hidden (block and presence flag
            zeroed) with this probability each, never all of an item's, so the network learns to compare
            items that miss one (listings without a picture).
        dims: the modalities' dimensions (the feature layout: blocks, then one flag each); needed for it.
        weight: (M,) each training pair's weight in the loss (auxiliary pairs weigh less); None: all 1.
        candidates: the catalogue job's validation pairs (labelled validation pairs and the validation items'
            mined neighbours): their average precision is measured every epoch and the best epoch's weights
            kept apart (``candidates_state``); training stops once neither set has improved for ``patience``.

    Returns:
        The training history and the best epoch. ``net`` holds the best epoch's weights (on ``valid``).

    Raises:
        ConfigError: on ``resume`` without a checkpoint, or with one from a different run.
    """
    if train.target is None or valid.target is None:
        raise ConfigError("training needs labelled train and validation pairs")
    torch.set_num_threads(config.threads or default_threads())
    device = torch.device(resolve_device(config.device))
    bf16 = resolve_precision(config.precision) == "bf16" and device.type == "cpu"  # CPU autocast (AMX)
    if device.type != "cpu":
        net.to(device)
        features = features.to(device)
        log.info("training on %s (%s)", device, torch.cuda.get_device_name(device))
    if scorer is None:

        def scorer(net, features, left, right, batch_size):
            return score_logits(net, features, left, right, batch_size, bf16=bf16)

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    # fused: one kernel for every parameter's update instead of a few per tensor (measured 13 % less time per
    # epoch of the stacked siamese network on 2 cores)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    higher_better = config.monitor == "pr_auc"

    t_left = torch.from_numpy(train.left.astype(np.int64)).to(device)
    t_right = torch.from_numpy(train.right.astype(np.int64)).to(device)
    t_target = torch.from_numpy(train.target.astype(np.float32)).to(device)
    t_weight = None if weight is None else torch.from_numpy(np.asarray(weight, dtype=np.float32)).to(device)
    m = len(train)
    batch_size = config.batch_size or auto_batch_size(m)
    n_batches = (m + batch_size - 1) // batch_size

    log.info("%d training pairs, batch %d: %d steps per epoch", m, batch_size, n_batches)
    if n_batches < 20:
        log.warning(
            "only %d optimisation steps per epoch (%d pairs, batch %d): the model may not converge in %d epochs; "
            "a smaller --batch-size gives more steps",
            n_batches,
            m,
            batch_size,
            config.epochs,
        )
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    history: list[EpochRecord] = []
    # the monitored validation score's best epoch (the untrained weights until one is scored), and the catalogue
    # job's (the candidates' average precision), each with its weights and validation logits
    best = Best(higher_better, epoch=0, state=copy.deepcopy(net.state_dict()))
    cand = Best(higher_better=True)
    bad_epochs = 0
    start_epoch = 1
    fingerprint = {
        **(fingerprint or {}),
        **asdict(config),
        "train_pairs": m,
        "train_weight": None if weight is None else float(np.asarray(weight, dtype=np.float64).sum()),
        "valid_pairs": len(valid),
        "candidates": None if candidates is None else len(candidates),
        "learning_rate": lr,
    }
    for k in ("epochs", "patience", "threads", "eval_batch_size", "calibration", "target_precision"):  # may change
        fingerprint.pop(k, None)

    checkpoint = Checkpoint(ckpt_path, fingerprint)
    if resume:
        ckpt = checkpoint.load(device)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        best.state, best.score, best.epoch = ckpt["best_state"], ckpt["best_score"], ckpt["best_epoch"]
        bad_epochs = ckpt["bad_epochs"]
        if ckpt.get("candidates_state") is not None:
            cand.state, cand.score, cand.epoch = (
                ckpt["candidates_state"],
                ckpt["candidates_score"],
                ckpt["candidates_epoch"],
            )
        history = [EpochRecord(**h) for h in ckpt["history"]]
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_epoch = ckpt["epoch"] + 1
        log.info("resumed from %s after epoch %d (best so far: epoch %d)", ckpt_path, ckpt["epoch"], best.epoch)

    t_start = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, config.epochs + 1):
        if config.patience is not None and bad_epochs >= config.patience:
            stopped_early = True
            break
        if callback:
            callback.on_epoch_start(epoch, config.epochs, n_batches)
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(m, generator=gen).to(device)  # a fresh shuffle every epoch (the same on any device)
        total, seen = 0.0, 0
        for start in range(0, m, batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one row
                continue
            a = features.index_select(0, t_left.index_select(0, idx))  # (B, F)
            b = features.index_select(0, t_right.index_select(0, idx))  # (B, F)
            if modality_dropout > 0 and dims and len(dims) > 1:
                a, b = (
                    _hide_modalities(a, dims, modality_dropout, gen),
                    _hide_modalities(b, dims, modality_dropout, gen),
                )
            y = t_target.index_select(0, idx)  # (B,)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(a, b)
            w = None if t_weight is None else t_weight.index_select(0, idx)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y, weight=w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_loss = loss.item()
            total += batch_loss * len(idx)
            seen += len(idx)
            if callback:
                callback.on_batch_end(batch_loss)
        train_seconds = time.perf_counter() - t0

        logits = scorer(net, features, valid.left, valid.right, config.eval_batch_size)
        v_loss = float(
            F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(valid.target)).item()
        )
        v_pr = pr_auc(valid.target, sigmoid(logits))  # on float32 probabilities, exactly as evaluate() sees them
        score = v_pr if higher_better else v_loss
        improved = best.offer(score, epoch, net, logits)
        c_ap = None
        if candidates is not None:
            from sklearn.metrics import average_precision_score

            c_logits = scorer(net, features, candidates.left, candidates.right, config.eval_batch_size)
            c_ap = float(average_precision_score(candidates.target, c_logits))
            improved_any = cand.offer(c_ap, epoch, net, c_logits) or improved
        else:
            improved_any = improved
        bad_epochs = 0 if improved_any else bad_epochs + 1
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(seen, 1),
            valid_loss=v_loss,
            valid_pr_auc=v_pr,
            seconds=time.perf_counter() - t0,
            pairs_per_second=seen / train_seconds,
            improved=improved,
            candidates_average_precision=c_ap,
        )
        history.append(record)
        log.info(
            "epoch %d/%d: train loss %.4f, valid loss %.4f, valid PR-AUC %.4f%s%s (%.1fs, %.0f pairs/s)",
            epoch,
            config.epochs,
            record.train_loss,
            v_loss,
            v_pr,
            " *" if improved else "",
            "" if c_ap is None else f", candidates AP {c_ap:.4f}{' *' if cand.epoch == epoch else ''}",
            record.seconds,
            record.pairs_per_second,
        )
        checkpoint.save(
            {
                "epoch": epoch,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_state": best.state,
                "best_score": float(best.score),
                "best_epoch": best.epoch,
                "bad_epochs": bad_epochs,
                "history": [asdict(h) for h in history],
                "candidates_state": cand.state,
                "candidates_score": float(cand.score),
                "candidates_epoch": cand.epoch,
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
        )
        if callback:
            callback.on_epoch_end(record)

    if stopped_early:
        log.info("early stop: no improvement of validation %s for %d epochs", config.monitor, config.patience)

    net.load_state_dict(best.state)
    if best.extra is None and len(valid):  # resumed after the last epoch: the best weights' logits again
        best.extra = scorer(net, features, valid.left, valid.right, config.eval_batch_size)
    if device.type != "cpu":  # scoring, the item-feature store and saving run on the CPU
        net.to("cpu")
        cand.state = None if cand.state is None else {k: v.cpu() for k, v in cand.state.items()}
    log.info("restored the best epoch's weights: epoch %d (validation %s %.4f)", best.epoch, config.monitor, best.score)
    return TrainResult(
        best_epoch=best.epoch,
        best_score=float(best.score),
        history=history,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - t_start,
        best_logits=best.extra,
        candidates_best_epoch=cand.epoch,
        candidates_best_score=None if cand.epoch is None else float(cand.score),
        candidates_state=cand.state,
        candidates_logits=cand.extra,
    )


def _hide_modalities(x: torch.Tensor, dims: list[int], p: float, gen: torch.Generator) -> torch.Tensor:
    """A copy of item features with each present modality hidden with probability ``p``; an item whose every
    modality came up hidden keeps them all."""
    k = len(dims)
    flags = x[:, -k:] > 0
    hide = (torch.rand(x.shape[0], k, generator=gen).to(x.device) < p) & flags
    hide &= (flags & ~hide).any(dim=1, keepdim=True)  # never every modality an item has
    if not hide.any():
        return x
    keep = torch.cat([(~hide[:, i : i + 1]).expand(-1, d) for i, d in enumerate(dims)] + [~hide], dim=1)
    return x * keep.to(x.dtype)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 probabilities; computed in float64 so moderate logits do not round to exactly 0 or 1 early."""
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
