"""The training loop for pairwise networks: batches gathered by index, per-epoch validation,
a true copy of the best epoch's weights, early stopping and resumable checkpoints.

Batches are gathered with ``index_select`` from one (N, F) item-feature tensor, so there is no per-pair
Python and no DataLoader: a step costs what the network costs.
"""

from __future__ import annotations

import copy
import logging
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
    net.eval()
    out = np.empty(len(left), dtype=np.float32)
    lt = torch.from_numpy(np.asarray(left, dtype=np.int64)).to(features.device)
    rt = torch.from_numpy(np.asarray(right, dtype=np.int64)).to(features.device)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(left), batch_size):
            sl = slice(start, start + batch_size)
            a = features.index_select(0, lt[sl])
            b = features.index_select(0, rt[sl])
            out[sl] = net(a, b).float().cpu().numpy()
    return out


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
    best_state = copy.deepcopy(net.state_dict())
    best_score = -np.inf if higher_better else np.inf
    best_epoch = 0
    bad_epochs = 0
    best_logits = cand_logits = None
    cand_state, cand_score, cand_epoch = None, -np.inf, None
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

    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise ConfigError(f"--resume: no checkpoint at {ckpt_path}; start the run without --resume")
        ckpt = torch.load(ckpt_path, weights_only=True, map_location=device)
        if ckpt["fingerprint"] != fingerprint:
            diff = {
                k: (ckpt["fingerprint"].get(k), v) for k, v in fingerprint.items() if ckpt["fingerprint"].get(k) != v
            }
            raise ConfigError(
                f"--resume: the checkpoint in {ckpt_path} is from a different run: {diff} "
                "(checkpoint, now); resume with the same data and settings, or start afresh"
            )
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        best_state = ckpt["best_state"]
        best_score, best_epoch, bad_epochs = ckpt["best_score"], ckpt["best_epoch"], ckpt["bad_epochs"]
        if ckpt.get("candidates_state") is not None:
            cand_state, cand_score, cand_epoch = (
                ckpt["candidates_state"],
                ckpt["candidates_score"],
                ckpt["candidates_epoch"],
            )
        history = [EpochRecord(**h) for h in ckpt["history"]]
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_epoch = ckpt["epoch"] + 1
        log.info("resumed from %s after epoch %d (best so far: epoch %d)", ckpt_path, ckpt["epoch"], best_epoch)

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
        improved = bool(score > best_score if higher_better else score < best_score)
        if improved:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(net.state_dict())  # a true copy, not a view of live weights
            best_logits = logits
        c_ap = None
        if candidates is not None:
            from sklearn.metrics import average_precision_score

            c_logits = scorer(net, features, candidates.left, candidates.right, config.eval_batch_size)
            c_ap = float(average_precision_score(candidates.target, c_logits))
            if c_ap > cand_score:
                cand_score, cand_epoch, cand_logits = c_ap, epoch, c_logits
                cand_state = copy.deepcopy(net.state_dict())
                improved_any = True
            else:
                improved_any = improved
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
            "" if c_ap is None else f", candidates AP {c_ap:.4f}{' *' if cand_epoch == epoch else ''}",
            record.seconds,
            record.pairs_per_second,
        )
        if ckpt_path is not None:
            save_checkpoint(
                ckpt_path,
                {
                    "epoch": epoch,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "best_state": best_state,
                    "best_score": float(best_score),
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "history": [asdict(h) for h in history],
                    "candidates_state": cand_state,
                    "candidates_score": float(cand_score),
                    "candidates_epoch": cand_epoch,
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "fingerprint": fingerprint,
                },
            )
        if callback:
            callback.on_epoch_end(record)

    if stopped_early:
        log.info("early stop: no improvement of validation %s for %d epochs", config.monitor, config.patience)

    net.load_state_dict(best_state)
    if best_logits is None and len(valid):  # resumed after the last epoch: the best weights' logits again
        best_logits = scorer(net, features, valid.left, valid.right, config.eval_batch_size)
    if device.type != "cpu":  # scoring, the item-feature store and saving run on the CPU
        net.to("cpu")
        cand_state = None if cand_state is None else {k: v.cpu() for k, v in cand_state.items()}
    log.info("restored the best epoch's weights: epoch %d (validation %s %.4f)", best_epoch, config.monitor, best_score)
    return TrainResult(
        best_epoch=best_epoch,
        best_score=float(best_score),
        history=history,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - t_start,
        best_logits=best_logits,
        candidates_best_epoch=cand_epoch,
        candidates_best_score=None if cand_epoch is None else float(cand_score),
        candidates_state=cand_state,
        candidates_logits=cand_logits,
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
