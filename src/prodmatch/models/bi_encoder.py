"""``bi-encoder``: a transformer fine-tuned contrastively on the labelled pairs; a pair's score is the cosine
of its items' vectors.

Each item's record (:mod:`prodmatch.text.records`) goes through the encoder (all-MiniLM-L6-v2, bundled, or
``encoder_path``) to one unit vector, computed once per item (the same vectors could serve candidate search;
``match`` does not use them yet). Training follows R-SupCon / SimCSE practice with a multiple-negatives ranking loss:

- every matching pair (a, b) is an example; in a batch, b must be a's nearest among every other example's
  items (in-batch negatives) and a labelled non-match of a or b (a hard negative), and the same from b's
  side (the loss is symmetric, so the model is too);
- matches are grouped transitively (connected components of the matching pairs): two examples of one
  group never share a batch, so no item is pushed away from its own product;
- the best epoch on the validation pairs' average precision is kept; early stopping, a checkpoint after
  every epoch and ``resume`` as the networks have; bf16 autocast where the CPU has AMX (``precision``).

The raw score (``predict_logits``) is the cosine; calibration maps it to a probability as for every model.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import average_precision_score

from prodmatch.catalogue import Catalogue
from prodmatch.config import INFERENCE_BATCH, TrainConfig
from prodmatch.errors import ConfigError, ModelError
from prodmatch.evaluation import pr_auc
from prodmatch.io import write_json
from prodmatch.models.base import PairModel
from prodmatch.pairs import PairSet
from prodmatch.text.encoder import check_encoder_path, load_sentence_encoder, resolve_device
from prodmatch.text.records import RecordTexts, item_records
from prodmatch.training import (
    CHECKPOINT_FILE,
    EpochRecord,
    TrainCallback,
    TrainResult,
    _save_checkpoint,
    default_threads,
    resolve_precision,
)

__all__ = ["BiEncoderModel", "BiEncoderParams"]

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
RECORDS_FILE = "records.json"


@dataclass(frozen=True)
class BiEncoderParams:
    """Hyperparameters."""

    encoder_path: str = ""  # a local Hugging Face folder; "" is the bundled all-MiniLM-L6-v2
    epochs: int = 3  # at most this many (fewer when the run's --epochs is lower); the best on valid is kept
    batch_size: int = 32  # examples per batch (each brings 2 or 3 records)
    lr: float = 5e-5  # AdamW, linear warm-up over the first 10 % of steps, then linear decay
    scale: float = 20.0  # the ranking loss's inverse temperature on cosines
    hard_negatives: bool = True  # one labelled non-match of each example's items joins its batch
    max_tokens: int = 64  # cap of the sequence budget (a percentile of the records' token counts)
    percentile: float = 95.0
    device: str = "auto"  # cuda when a GPU is visible, else cpu


class BiEncoderModel(PairModel):
    name = "bi-encoder"
    params_class = BiEncoderParams
    symmetric = True
    needs = frozenset({"names", "attributes", "texts"})

    # ------------------------------------------------------------------------------------------ fit

    def fit(
        self,
        catalogue: Catalogue,
        train: PairSet,
        valid: PairSet,
        config: TrainConfig | None = None,
        *,
        modalities: list[str] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callback: TrainCallback | None = None,
        **_: object,
    ) -> BiEncoderModel:
        """Fine-tune the encoder on ``train``'s matches; keep the epoch with the best average precision on ``valid``."""
        config = config or TrainConfig()
        if train.target is None or valid.target is None:
            raise ConfigError("training needs labelled train and validation pairs")
        self.modalities_ = []  # reads text, no embedding column
        self.encoder_source_ = str(check_encoder_path(self.params.encoder_path or None))
        self.device_ = resolve_device(self.params.device)
        self.precision_ = resolve_precision(config.precision) if self.device_ == "cpu" else "bf16"
        torch.set_num_threads(config.threads or default_threads())
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        self.encoder_ = load_sentence_encoder(Path(self.encoder_source_), self.device_)
        tokenizer = self.encoder_.tokenizer
        train_rows = np.unique(np.concatenate([train.left, train.right]))
        self.records_ = RecordTexts.fit(
            item_records(catalogue, train_rows),
            tokenizer,
            percentile=self.params.percentile,
            cap=self.params.max_tokens,
        )
        self.encoder_.max_seq_length = self.records_.max_tokens
        self._vectors = {}

        examples, negatives, groups = _examples(train, rng)
        if not len(examples):
            raise ConfigError("the bi-encoder learns from matching pairs, and the training pairs hold none")
        rows = np.unique(np.concatenate([train_rows, valid.left, valid.right]))
        texts = dict(zip(rows.tolist(), self.records_.summarise(item_records(catalogue, rows), tokenizer), strict=True))
        epochs = max(1, min(config.epochs, self.params.epochs))
        steps_per_epoch = math.ceil(len(examples) / self.params.batch_size)
        optimizer = torch.optim.AdamW(self.encoder_.parameters(), lr=self.params.lr, weight_decay=0.01)
        total = epochs * steps_per_epoch
        warm = max(1, int(0.1 * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
        )
        fingerprint = {
            "model": self.name,
            "params": asdict(self.params),
            "train": len(train),
            "valid": len(valid),
            "seed": config.seed,
            "epochs": epochs,  # the learning-rate schedule spans them
        }
        result = TrainResult(best_epoch=0, best_score=-math.inf)
        precisions: list[float] = []  # validation average precision per epoch, which picks the best
        best_state = None
        start = 0
        ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
        if resume:
            if ckpt is None or not ckpt.exists():
                raise ConfigError(f"--resume: no checkpoint at {ckpt}; train without --resume")
            state = torch.load(ckpt, map_location=self.device_, weights_only=False)
            if state["fingerprint"] != fingerprint:
                raise ConfigError(f"--resume: {ckpt} is from a different run ({state['fingerprint']}); remove it")
            self.encoder_.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            result, best_state, start = state["result"], state["best"], state["epoch"]
            precisions = state["precisions"]
            rng = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            log.info("bi-encoder: resumed after epoch %d", start)
        t_fit = time.perf_counter()
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            batches = _group_batches(groups, self.params.batch_size, rng)
            if callback is not None:
                callback.on_epoch_start(epoch + 1, epochs, len(batches))
            self.encoder_.train()
            losses, records_seen = [], 0
            for batch in batches:
                a, b = examples[batch, 0], examples[batch, 1]
                swap = rng.random(len(batch)) < 0.5  # either item may be the anchor
                a, b = np.where(swap, b, a), np.where(swap, a, b)
                hard = negatives[batch] if self.params.hard_negatives else np.array([], dtype=np.int64)
                hard = hard[hard >= 0]
                loss = self._loss([texts[r] for r in a], [texts[r] for r in b], [texts[r] for r in hard])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.encoder_.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                records_seen += 2 * len(batch) + len(hard)
                if callback is not None:
                    callback.on_batch_end(losses[-1])
            seconds = time.perf_counter() - t0
            self._vectors = {}
            cosines = self._cosines(catalogue, valid.left, valid.right, texts)
            score = average_precision_score(valid.target, cosines)
            precisions.append(score)
            improved = score > result.best_score
            if improved:
                result.best_score, result.best_epoch = score, epoch + 1
                best_state = copy.deepcopy(self.encoder_.state_dict())
            record = EpochRecord(
                epoch=epoch + 1,
                train_loss=float(np.mean(losses)),
                valid_loss=None,  # no pair loss: the ranking loss is over batches
                valid_pr_auc=pr_auc(valid.target, cosines),
                seconds=seconds,
                pairs_per_second=len(examples) / seconds,
                improved=improved,
            )
            result.history.append(record)
            log.info(
                "bi-encoder: epoch %d/%d loss %.4f, valid average precision %.4f%s, %.0fs (%.0f records/s)",
                epoch + 1,
                epochs,
                record.train_loss,
                score,
                " (best)" if improved else "",
                seconds,
                records_seen / seconds,
            )
            if callback is not None:
                callback.on_epoch_end(record)
            stop = bool(config.patience) and epoch + 1 - result.best_epoch >= config.patience
            if ckpt is not None:
                _save_checkpoint(
                    ckpt,
                    {
                        "fingerprint": fingerprint,
                        "model": self.encoder_.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "result": result,
                        "best": best_state,
                        "epoch": epoch + 1,
                        "precisions": precisions,
                        "rng": rng,
                        "torch_rng": torch.get_rng_state(),
                    },
                )
            if stop and epoch + 1 < epochs:
                result.stopped_early = True
                break
        self.encoder_.load_state_dict(best_state)
        self.encoder_.eval()
        self._vectors = {}
        result.seconds = time.perf_counter() - t_fit
        self.result_ = result
        self.history_ = [
            {**asdict(h), "valid_average_precision": ap} for h, ap in zip(result.history, precisions, strict=True)
        ]
        return self

    def _loss(self, anchors: list[str], positives: list[str], hard: list[str]) -> torch.Tensor:
        """Symmetric multiple-negatives ranking loss: each anchor's positive among every positive and hard
        negative of the batch, and each positive's anchor among every anchor and hard negative."""
        n = len(anchors)
        with torch.autocast(self.device_, dtype=torch.bfloat16, enabled=self.precision_ == "bf16"):
            emb = self._embed(anchors + positives + hard).float()
        a, p, h = emb[:n], emb[n : 2 * n], emb[2 * n :]
        labels = torch.arange(n, device=emb.device)
        forward = self.params.scale * a @ torch.cat([p, h]).T
        backward = self.params.scale * p @ torch.cat([a, h]).T
        ce = torch.nn.functional.cross_entropy
        return 0.5 * (ce(forward, labels) + ce(backward, labels))

    def _embed(self, texts: list[str]) -> torch.Tensor:
        features = self.encoder_.preprocess(texts)
        features = {k: v.to(self.device_) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return self.encoder_(features)["sentence_embedding"]

    def fit_summary(self) -> dict:
        return {
            **self.result_.summary(),
            "precision": self.precision_,
            "device": self.device_,
            "max_tokens": self.records_.max_tokens,
        }

    # --------------------------------------------------------------------------------------- scoring

    def item_vectors(self, catalogue: Catalogue, rows: np.ndarray, texts: dict | None = None) -> np.ndarray:
        """(len(rows), d) float32 unit vectors of catalogue ``rows``, encoded once per item and kept."""
        self._check_fitted()
        ref, cache = self._vectors.get(id(catalogue), (None, None))
        if ref is None or ref() is not catalogue:  # a new catalogue (or a dead one's id reused)
            cache = {}
            self._vectors[id(catalogue)] = (weakref.ref(catalogue), cache)
        rows = np.asarray(rows, dtype=np.int64)
        todo = np.array([r for r in np.unique(rows).tolist() if r not in cache], dtype=np.int64)
        if len(todo):
            if texts is not None:
                records = [texts[r] for r in todo.tolist()]
            else:
                records = self.records_.summarise(item_records(catalogue, todo), self.encoder_.tokenizer)
            self.encoder_.eval()
            with torch.inference_mode():
                vecs = self.encoder_.encode(
                    records, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
                )
            cache.update(zip(todo.tolist(), vecs.astype(np.float32), strict=True))
        return np.stack([cache[r] for r in rows.tolist()]) if len(rows) else np.zeros((0, 1), np.float32)

    def _cosines(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, texts: dict | None = None):
        u = self.item_vectors(catalogue, left, texts)
        v = self.item_vectors(catalogue, right, texts)
        return np.einsum("ij,ij->i", u, v).astype(np.float32)

    def predict_logits(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """(M,) float32 cosines of the pairs' item vectors: symmetric, and the same in any batch."""
        self._check_fitted()
        return self._cosines(catalogue, pairs.left, pairs.right)

    # ---------------------------------------------------------------------------------- persistence

    def _save_weights(self, run_dir: Path) -> dict:
        target = run_dir / ENCODER_DIR
        tmp = run_dir / f".{ENCODER_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.encoder_.save(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        write_json(self.records_.to_dict(), run_dir / RECORDS_FILE)
        return {
            "encoder": ENCODER_DIR,
            "encoder_source": self.encoder_source_,
            "records": RECORDS_FILE,
            "precision": self.precision_,
        }

    def _load_weights(self, run_dir: Path, config: dict) -> None:
        import json

        folder = run_dir / config.get("encoder", ENCODER_DIR)
        if not folder.exists():
            raise ModelError(f"{folder} is missing: the run directory {run_dir} is incomplete; train it again")
        self.encoder_source_ = config.get("encoder_source", "")
        self.precision_ = config.get("precision", "fp32")
        self.device_ = resolve_device(self.params.device)
        self.records_ = RecordTexts.from_dict(json.loads((run_dir / config.get("records", RECORDS_FILE)).read_text()))
        self.encoder_ = load_sentence_encoder(check_encoder_path(folder), self.device_, self.records_.max_tokens)
        self.encoder_.eval()
        self._vectors = {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise ModelError(f"this {self.name} model is not fitted; call fit() or load a run directory")


def _examples(train: PairSet, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matching pairs (E, 2) once each, one labelled non-match of either item per example (-1 where neither
    has one), and each example's group: its connected component of matches."""
    y = train.target > 0.5
    pos = np.unique(np.sort(np.stack([train.left[y], train.right[y]], axis=1), axis=1), axis=0)
    neg_l, neg_r = train.left[~y], train.right[~y]
    partners: dict[int, list[int]] = {}
    for a, b in zip(neg_l.tolist(), neg_r.tolist(), strict=True):
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    negatives = np.full(len(pos), -1, dtype=np.int64)
    for i, (a, b) in enumerate(pos.tolist()):
        options = partners.get(a, []) + partners.get(b, [])
        if options:
            negatives[i] = options[rng.integers(len(options))]
    if not len(pos):
        return pos, negatives, np.zeros(0, dtype=np.int64)
    items, inverse = np.unique(pos, return_inverse=True)
    inverse = inverse.reshape(pos.shape)
    graph = coo_matrix((np.ones(len(pos)), (inverse[:, 0], inverse[:, 1])), shape=(len(items), len(items)))
    _, labels = connected_components(graph, directed=False)
    return pos, negatives, labels[inverse[:, 0]]


def _group_batches(groups: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of example indices, shuffled, where no two examples of one group meet: each batch takes at
    most one example from any group (a group larger than the batch count spreads over several)."""
    order = rng.permutation(len(groups))
    n_batches = max(1, math.ceil(len(groups) / size))
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    members: list[set] = [set() for _ in range(n_batches)]
    cursor = 0
    for i in order.tolist():
        g = groups[i]
        for step in range(n_batches):
            b = (cursor + step) % n_batches
            if len(batches[b]) < size and g not in members[b]:
                batches[b].append(i)
                members[b].add(g)
                break
        else:  # every batch is full or holds the group: start a new one
            batches.append([i])
            members.append({g})
            n_batches += 1
        cursor = (cursor + 1) % n_batches
    return [np.asarray(b, dtype=np.int64) for b in batches if b]
