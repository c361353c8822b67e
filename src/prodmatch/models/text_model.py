"""What the fine-tuned text models share: the encoder folder, the records and their budget, the training loop.

:class:`FineTunedTextModel` runs the loop both ``bi-encoder`` and ``cross-encoder`` use: check the encoder
folder, resolve the device and precision, fit the records' token budget on the training items, then
epochs of AdamW with linear warm-up and decay and gradient clipping; after each epoch the validation pairs'
average precision decides the best epoch (kept), early stopping (``--patience``) and a checkpoint of
everything a resumed run needs. A subclass says how an encoder folder loads and saves, what its training
examples and batches are, what one batch's loss is, and how pairs are scored.

Scoring goes through one graph per model (:meth:`FineTunedTextModel.graph`: token ids -> unit vectors, or
-> pair logits), run by torch or, after ``prodmatch export``, by ONNX Runtime (``use_runtime("onnx")``);
batches are sorted by length and padded to their own longest sequence.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from prodmatch.atomic import write_json
from prodmatch.catalogue import Catalogue
from prodmatch.config import TrainConfig
from prodmatch.errors import ConfigError, ModelError
from prodmatch.evaluation import pr_auc
from prodmatch.evidence import side_bit
from prodmatch.models.base import ENCODER_DIR, RUNTIMES, PairModel
from prodmatch.models.onnx_runtime import load_text_onnx
from prodmatch.pairs import PairSet
from prodmatch.text.encoder import check_encoder_path, resolve_device
from prodmatch.text.records import RecordTexts, item_records
from prodmatch.training import (
    CHECKPOINT_FILE,
    Best,
    Checkpoint,
    EpochRecord,
    TrainCallback,
    TrainResult,
    default_threads,
    resolve_precision,
)

__all__ = ["FineTunedTextModel", "TextParams"]

log = logging.getLogger(__name__)

RECORDS_FILE = "records.json"
INFERENCE_SEQUENCES = 64  # sequences per inference batch


@dataclass(frozen=True)
class TextParams:
    """Hyperparameters every fine-tuned text model has."""

    encoder_path: str = ""  # a local Hugging Face folder; "" is the bundled all-MiniLM-L6-v2
    epochs: int = 3  # at most this many (fewer when the run's --epochs is lower); the best on valid is kept
    batch_size: int = 32
    lr: float = 5e-5  # AdamW, linear warm-up over the first 10 % of steps, then linear decay
    max_tokens: int = 64  # cap of an item's sequence budget (a percentile of the records' token counts)
    percentile: float = 95.0
    device: str = "auto"  # cuda when a GPU is visible, else cpu


class FineTunedTextModel(PairModel):
    """A pair model that fine-tunes a transformer on the items' records (see the module docstring)."""

    params_class = TextParams
    needs = frozenset({"names", "attributes", "texts"})
    onnx_ = None  # a TextOnnxSession once use_runtime("onnx") is called
    text_only = True
    onnx_graph = "text"
    joint = False  # whether the graph reads a pair in one sequence (a cross-encoder) or one record at a time

    # --------------------------------------------------------------------------- subclass hooks

    def _load_encoder(self, folder: Path, fresh: bool) -> None:
        """Set ``self.encoder_`` (the trainable module) and ``self.tokenizer_`` from a checked folder;
        ``fresh``: the folder is the starting point, not a saved run."""
        raise NotImplementedError

    def _save_encoder(self, folder: Path) -> None:
        raise NotImplementedError

    def _prepare(self, train: PairSet, rng: np.random.Generator) -> int:
        """Build the training examples; return how many there are (an epoch's size)."""
        raise NotImplementedError

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches of example indices."""
        raise NotImplementedError

    def _batch_loss(
        self, batch: np.ndarray, texts: dict[int, str], rng: np.random.Generator
    ) -> tuple[torch.Tensor, int]:
        """(the batch's loss, the sequences it encoded)."""
        raise NotImplementedError

    def _pair_scores(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, texts: dict | None) -> np.ndarray:
        """(M,) float32 raw scores; ``texts``: row -> summarised record, when already made."""
        raise NotImplementedError

    def score_texts(self, first: list[str], second: list[str]) -> np.ndarray:
        """(M,) float32 raw scores of pairs of (summarised) records, with no catalogue."""
        raise NotImplementedError

    def graph(self) -> torch.nn.Module:
        """The module that scoring runs and ``prodmatch export`` writes: keyword token inputs -> (B, ...)."""
        raise NotImplementedError

    def tokenize(self, first: list[str], second: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The graph's inputs for single records, or for pairs of them."""
        raise NotImplementedError

    def _reset_cache(self) -> None:
        """Forget whatever scoring cached (the weights changed)."""

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
    ) -> FineTunedTextModel:
        """Fine-tune on ``train``; keep the epoch with the best average precision on ``valid``."""
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
        self._load_encoder(Path(self.encoder_source_), fresh=True)
        train_rows = np.unique(np.concatenate([train.left, train.right]))
        self.records_ = RecordTexts.fit(
            item_records(catalogue, train_rows),
            self.tokenizer_,
            percentile=self.params.percentile,
            cap=self.params.max_tokens,
        )
        self._reset_cache()
        n_examples = self._prepare(train, rng)
        rows = np.unique(np.concatenate([train_rows, valid.left, valid.right]))
        texts = dict(
            zip(rows.tolist(), self.records_.summarise(item_records(catalogue, rows), self.tokenizer_), strict=True)
        )
        epochs = max(1, min(config.epochs, self.params.epochs))
        optimizer = torch.optim.AdamW(self.encoder_.parameters(), lr=self.params.lr, weight_decay=0.01)
        total = epochs * math.ceil(n_examples / self.params.batch_size)
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
        best = Best(higher_better=True, epoch=0)
        start = 0
        checkpoint = Checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None, fingerprint)
        if resume:
            state = checkpoint.load(self.device_)
            self.encoder_.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            result = TrainResult(
                **{**state["result"], "history": [EpochRecord(**h) for h in state["result"]["history"]]}
            )
            best.state, best.score, best.epoch, start = (
                state["best"],
                result.best_score,
                result.best_epoch,
                state["epoch"],
            )
            precisions = state["precisions"]
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            log.info("%s: resumed after epoch %d", self.name, start)
        t_fit = time.perf_counter()
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            batches = self._batches(rng)
            if callback is not None:
                callback.on_epoch_start(epoch + 1, epochs, len(batches))
            self.encoder_.train()
            losses, sequences = [], 0
            for batch in batches:
                loss, seen = self._batch_loss(batch, texts, rng)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.encoder_.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                sequences += seen
                if callback is not None:
                    callback.on_batch_end(losses[-1])
            seconds = time.perf_counter() - t0
            self.encoder_.eval()
            self._reset_cache()
            scores = self._pair_scores(catalogue, valid.left, valid.right, texts)
            score = average_precision_score(valid.target, scores)
            precisions.append(score)
            improved = best.offer(score, epoch + 1, self.encoder_)
            result.best_score, result.best_epoch = best.score, best.epoch  # what the checkpoint and patience read
            record = EpochRecord(
                epoch=epoch + 1,
                train_loss=float(np.mean(losses)),
                valid_loss=None,  # the losses differ by model; average precision compares them
                valid_pr_auc=pr_auc(valid.target, scores),
                seconds=seconds,
                pairs_per_second=n_examples / seconds,
                improved=improved,
            )
            result.history.append(record)
            log.info(
                "%s: epoch %d/%d loss %.4f, valid average precision %.4f%s, %.0fs (%.0f sequences/s)",
                self.name,
                epoch + 1,
                epochs,
                record.train_loss,
                score,
                " (best)" if improved else "",
                seconds,
                sequences / seconds,
            )
            if callback is not None:
                callback.on_epoch_end(record)
            stop = bool(config.patience) and epoch + 1 - result.best_epoch >= config.patience
            # every epoch (a run without a checkpoint folder saves nothing)
            checkpoint.save(
                {
                    "model": self.encoder_.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "result": {**asdict(result), "best_score": float(result.best_score)},
                    "best": best.state,
                    "epoch": epoch + 1,
                    "precisions": [float(x) for x in precisions],
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                },
            )
            if stop and epoch + 1 < epochs:
                result.stopped_early = True
                break
        self.encoder_.load_state_dict(best.state)
        self.encoder_.eval()
        self._reset_cache()
        result.seconds = time.perf_counter() - t_fit
        self.result_ = result
        self.history_ = [
            {**asdict(h), "valid_average_precision": ap} for h, ap in zip(result.history, precisions, strict=True)
        ]
        return self

    # --------------------------------------------------------------------------------------- scoring

    def use_runtime(self, runtime: str, threads: int = 1) -> FineTunedTextModel:
        """Score with torch, or with ONNX Runtime over the run's exported ``model.onnx`` (``prodmatch export``)."""
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.onnx_ = None
        if runtime == "onnx":
            if getattr(self, "run_dir_", None) is None:
                raise ModelError("ONNX scoring needs a model loaded from an exported run directory")
            self.onnx_ = load_text_onnx(self.run_dir_, threads)
        self._reset_cache()
        return self

    def run_graph(self, first: list[str], second: list[str] | None = None) -> np.ndarray:
        """The graph's float32 output for each record (or pair of records), in length-sorted, dynamically
        padded batches, by torch or ONNX Runtime."""
        lengths = [len(a) + (len(second[i]) if second is not None else 0) for i, a in enumerate(first)]
        order = np.argsort(lengths, kind="stable")
        out: np.ndarray | None = None
        graph = self.graph() if self.onnx_ is None else None
        if graph is not None:
            graph.eval()
        for s in range(0, len(order), INFERENCE_SEQUENCES):
            idx = order[s : s + INFERENCE_SEQUENCES].tolist()
            inputs = self.tokenize([first[i] for i in idx], [second[i] for i in idx] if second is not None else None)
            if self.onnx_ is not None:
                got = self.onnx_(inputs)
            else:
                with torch.inference_mode(), self._autocast():
                    got = graph(**{k: v.to(self.device_) for k, v in inputs.items()}).float().cpu().numpy()
            if out is None:
                out = np.empty((len(first), *got.shape[1:]), dtype=np.float32)
            out[idx] = got
        return out if out is not None else np.zeros(0, dtype=np.float32)

    def _autocast(self):
        return torch.autocast(self.device_, dtype=torch.bfloat16, enabled=self.precision_ == "bf16")

    def fit_summary(self) -> dict:
        return {
            **self.result_.summary(),
            "precision": self.precision_,
            "device": self.device_,
            "max_tokens": self.records_.max_tokens,
        }

    def evidence(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The ``text`` bit where both items have any text (a name, a long text or attributes): a text model
        compares whole records, so two records are comparable whatever words they share."""
        left, right = np.asarray(left), np.asarray(right)
        rows = np.union1d(left, right)
        has = np.zeros(len(rows), dtype=bool)
        for column in (catalogue.names, catalogue.texts, catalogue.attributes):
            if column is not None:
                has |= pd.Series(column[rows]).fillna("").astype(str).str.strip().str.len().to_numpy() > 0
        both = has[np.searchsorted(rows, left)] & has[np.searchsorted(rows, right)]
        return both.astype(np.uint32) * side_bit([], "text")

    def records(self, catalogue: Catalogue, rows: np.ndarray) -> list[str]:
        """The summarised records of catalogue ``rows``, as the model reads them."""
        return self.records_.summarise(item_records(catalogue, rows), self.tokenizer_)

    def predict_logits(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = 0) -> np.ndarray:
        """(M,) float32 raw scores of the pairs: symmetric in the pair's order."""
        self._check_fitted()
        return self._pair_scores(catalogue, pairs.left, pairs.right, None)

    # ---------------------------------------------------------------------------------- persistence

    def _save_weights(self, run_dir: Path) -> dict:
        target = run_dir / ENCODER_DIR
        tmp = run_dir / f".{ENCODER_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._save_encoder(tmp)
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
        folder = run_dir / config.get("encoder", ENCODER_DIR)
        if not folder.exists():
            raise ModelError(f"{folder} is missing: the run directory {run_dir} is incomplete; train it again")
        self.encoder_source_ = config.get("encoder_source", "")
        self.precision_ = config.get("precision", "fp32")
        self.device_ = resolve_device(self.params.device)
        self.records_ = RecordTexts.from_dict(json.loads((run_dir / config.get("records", RECORDS_FILE)).read_text()))
        self._load_encoder(check_encoder_path(folder), fresh=False)
        self.encoder_.eval()
        self._reset_cache()

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise ModelError(f"this {self.name} model is not fitted; call fit() or load a run directory")
