"""ONNX export of the network models, and the ONNX Runtime scorer that serves them on CPU.

``model.onnx`` computes exactly what :meth:`TorchPairModel.predict_logits` does in fp32: the logits of
pairs of item-feature rows (each row: the item's normalised modalities side by side, then one presence
flag per modality). An order-sensitive network is averaged over both orders inside the graph, so the
exported model is as order-invariant as the trained one. Calibration and the threshold stay in
``config.json``; they are a few numbers applied to the logits.

The export is checked before it lands: ONNX Runtime and torch score the same random and real inputs,
and a difference above :data:`PARITY_TOL` fails the export and leaves no file behind. ``onnx.json``
records the check and the hash of the weights it was made from, so a server never pairs a stale graph
with new weights.

A ``gbdt`` run is served by LightGBM natively; what it stacks on is a set of networks, each in a run
directory of its own under ``stack/``, and those are exported.

A text model (``bi-encoder``, ``cross-encoder``, alone or stacked under ``text_stack/``) exports its scoring
graph: token ids -> unit item vectors, or -> the logit of a pair sequence, with the batch and the sequence
length dynamic. Its parity check scores random records made of the run's own vocabulary (and, with a
catalogue, real item pairs) with both runtimes; the tokenizer stays in Python.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prodmatch.atomic import atomic_path, write_json
from prodmatch.errors import ConfigError, ModelError
from prodmatch.models import load_model
from prodmatch.models.base import ONNX_FILE, ONNX_META_FILE
from prodmatch.models.onnx_runtime import OnnxPairScorer, TextOnnxSession, weights_digest

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_FILE",
    "ONNX_META_FILE",
    "PARITY_TOL",
    "ExportReport",
    "OnnxPairScorer",
    "TextOnnxSession",
    "export_onnx",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# The largest ONNX-vs-torch difference allowed: absolute on probabilities (what users get), relative on
# logits (|gap| / max(1, |logit|): float32 GEMMs that sum in another order differ by ~1e-6 of the value).
PARITY_TOL = 1e-5
PARITY_SAMPLES = 4096
TEXT_PARITY_SAMPLES = 256  # pairs of records: a transformer scores ~100 sequences/s per core


@dataclass
class ExportReport:
    """What one export wrote and how closely ONNX Runtime matched torch.

    Attributes:
        run_dir: the run directory exported.
        path: the ``model.onnx`` written.
        bytes: its size.
        opset: the ONNX opset.
        parity: input set ("random", "real") -> {"pairs", "max_abs_probability", "max_abs_logit",
            "max_rel_logit"}.
        seconds: the time the export and the check took.
    """

    run_dir: str
    path: str
    bytes: int
    opset: int
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(
            f"ONNX export needs {', '.join(missing)}, which are not installed; "
            "install them with: pip install 'prodmatch[onnx]'"
        )


def export_onnx(
    run_dir: str | Path,
    *,
    catalogue=None,
    opset: int = DEFAULT_OPSET,
    samples: int = PARITY_SAMPLES,
    seed: int = 0,
) -> list[ExportReport]:
    """Export a trained run's network(s) to ONNX, each checked against torch before it is written.

    Args:
        run_dir: a run directory of a network model, or of ``gbdt`` (its stacked networks are exported).
        catalogue: optional real items (read with the model's data config) for the parity check, on top
            of random inputs.
        opset: the ONNX opset to target.
        samples: pairs per parity check.
        seed: seed of the random inputs and of the real pairs drawn.

    Returns:
        One report per exported network.

    Raises:
        ConfigError: ONNX packages are missing.
        ModelError: the model has no network, or ONNX Runtime and torch differ by more than PARITY_TOL.
    """
    _require_onnx()
    run_dir = Path(run_dir)
    model = load_model(run_dir)
    if model.onnx_graph == "network":
        return [_export_network(model, run_dir, catalogue, opset, samples, seed)]
    if model.onnx_graph == "text":
        return [_export_text(model, run_dir, catalogue, opset, min(samples, TEXT_PARITY_SAMPLES), seed)]
    stacked = [m for m in model.sub_models() if m.onnx_graph == "network"]
    texts = [m for m in model.sub_models() if m.onnx_graph == "text"]
    if not stacked and not texts:
        raise ModelError(
            f"{run_dir} holds a {model.name} model with no network to export: it is served by LightGBM "
            "natively (`prodmatch serve` needs no export)"
        )
    reports = [_export_network(m, Path(m.run_dir_), catalogue, opset, samples, seed + k) for k, m in enumerate(stacked)]
    for k, m in enumerate(texts):
        reports.append(_export_text(m, Path(m.run_dir_), catalogue, opset, min(samples, TEXT_PARITY_SAMPLES), seed + k))
    return reports


def _export_network(model, run_dir: Path, catalogue, opset: int, samples: int, seed: int) -> ExportReport:
    t0 = time.perf_counter()
    wrapper = PairLogits(model.network_, model.symmetric).eval()
    width = sum(d for _, d in model.modalities_) + len(model.modalities_)
    example = torch.from_numpy(random_item_features(model.modalities_, 4, np.random.default_rng(seed)))
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(run_dir / ONNX_FILE) as tmp:
        with _quiet():
            program = torch.onnx.export(
                wrapper,
                (example, example.flip(0)),
                None,
                input_names=["left", "right"],
                output_names=["logits"],
                dynamic_shapes={"left": {0: batch}, "right": {0: batch}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
            program.save(str(tmp))
        scorer = OnnxPairScorer(tmp, threads=1)
        parity = {"random": _parity(model, wrapper, scorer, *_random_pairs(model, samples, seed))}
        if catalogue is not None:
            parity["real"] = _parity(model, wrapper, scorer, *_real_pairs(model, catalogue, samples, seed))
        _check_parity(run_dir, parity, "inputs")
        size = tmp.stat().st_size
    report = ExportReport(str(run_dir), str(run_dir / ONNX_FILE), size, opset, parity, time.perf_counter() - t0)
    write_json(
        {
            **report.to_dict(),
            "inputs": {"left": ["batch", width], "right": ["batch", width]},
            "outputs": {"logits": ["batch"]},
            "item_features": "modalities in order, then one presence flag per modality",
            "modalities": [{"name": n, "dim": d} for n, d in model.modalities_],
            "weights_sha256": weights_digest(run_dir),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        run_dir / ONNX_META_FILE,
    )
    return report


def _export_text(model, run_dir: Path, catalogue, opset: int, samples: int, seed: int) -> ExportReport:
    t0 = time.perf_counter()
    model.use_runtime("torch")
    graph = model.graph().eval()
    first = ["COL name VAL acme kettle ke100 black", "b c d"]
    example = model.tokenize(first, ["KE100 kettle by Acme", "a"] if model.joint else None)
    names = list(example)
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=2, max=4096)
    with atomic_path(run_dir / ONNX_FILE) as tmp:
        with _quiet():
            program = torch.onnx.export(
                graph,
                (),
                None,
                kwargs=dict(example),
                input_names=names,
                output_names=["scores"],
                dynamic_shapes={k: {0: batch, 1: length} for k in names},
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
            program.save(str(tmp))
        session = TextOnnxSession(tmp, threads=1)
        rng = np.random.default_rng(seed)
        parity = {"random": _text_parity(model, session, *_random_records(model, samples, rng))}
        if catalogue is not None:
            a, b = rng.integers(0, len(catalogue), (2, samples))
            parity["real"] = _text_parity(model, session, model.records(catalogue, a), model.records(catalogue, b))
        _check_parity(run_dir, parity, "records")
        size = tmp.stat().st_size
    report = ExportReport(str(run_dir), str(run_dir / ONNX_FILE), size, opset, parity, time.perf_counter() - t0)
    write_json(
        {
            **report.to_dict(),
            "inputs": {k: ["batch", "length"] for k in names},
            "outputs": {"scores": ["batch"] if model.joint else ["batch", "dim"]},
            "item_features": "token ids from the run's tokenizer (encoder/), records summarised as records.json says",
            "weights_sha256": weights_digest(run_dir),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        run_dir / ONNX_META_FILE,
    )
    return report


def _check_parity(run_dir: Path, parity: dict[str, dict[str, float]], what: str) -> None:
    """Stop the export (nothing written) when ONNX Runtime and torch differ by more than PARITY_TOL."""
    for name, p in parity.items():
        worst = max(p["max_rel_logit"], p["max_abs_probability"])
        if worst > PARITY_TOL:
            raise ModelError(
                f"ONNX export of {run_dir}: ONNX Runtime differs from torch by {worst:.2e} on {name} {what} "
                f"(allowed {PARITY_TOL:.0e}); nothing was written. Try another --opset"
            )


def _random_records(model, n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Pairs of records of 2 to 40 words from the run's vocabulary, half of them near-copies (high scores)."""
    vocab = sorted(model.records_.idf) or ["item"]

    def record() -> str:
        words = [vocab[i] for i in rng.integers(0, len(vocab), int(rng.integers(2, 41)))]
        return "COL name VAL " + " ".join(words)

    first = [record() for _ in range(n)]
    second = [" ".join(a.split()[: max(4, len(a.split()) - 2)]) if rng.random() < 0.5 else record() for a in first]
    return first, second


def _text_parity(model, session: TextOnnxSession, first: list[str], second: list[str]) -> dict[str, float]:
    """ONNX Runtime against torch in float32, as the exported graph computes: a run that scores in bfloat16
    (where the CPU has AMX) differs from both by bfloat16's rounding, which the export does not change."""
    model.onnx_, precision = None, model.precision_
    model.precision_ = "fp32"
    try:
        reference = model.score_texts(first, second).astype(np.float64)
    finally:
        model.precision_ = precision
    model.onnx_ = session
    try:
        got = model.score_texts(first, second).astype(np.float64)
    finally:
        model.onnx_ = None
    return _parity_report(model, got, reference)


class PairLogits(nn.Module):
    """What ``model.onnx`` computes: logits of (left, right) item-feature rows, averaged over both orders
    for an order-sensitive network."""

    def __init__(self, network: nn.Module, symmetric: bool) -> None:
        super().__init__()
        self.network = network
        self.symmetric = symmetric

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        out = self.network(left, right)
        if not self.symmetric:
            out = 0.5 * (out + self.network(right, left))
        return out


def random_item_features(modalities: list[tuple[str, int]], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, F) item features with random unit embeddings; each modality absent (zeros, flag 0) 20 % of the time."""
    blocks, flags = [], []
    for _, d in modalities:
        x = rng.standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        present = rng.random(n) >= 0.2
        blocks.append(x * present[:, None])
        flags.append(present[:, None].astype(np.float32))
    return np.ascontiguousarray(np.concatenate(blocks + flags, axis=1))


def _random_pairs(model, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = random_item_features(model.modalities_, n, rng)
    right = random_item_features(model.modalities_, n, rng)
    near = rng.random(n) < 0.5  # half the pairs: the same item with a little noise, to cover high scores
    width = sum(d for _, d in model.modalities_)
    right[near, :width] = left[near, :width] + 0.05 * rng.standard_normal((near.sum(), width)).astype(np.float32)
    right[near, width:] = left[near, width:]
    return left, right


def _real_pairs(model, catalogue, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = catalogue.item_features([m for m, _ in model.modalities_])
    a = rng.integers(0, len(catalogue), n)
    b = np.where(rng.random(n) < 0.5, rng.integers(0, len(catalogue), n), a)  # random pairs and identical ones
    return features[a], features[b]


def _parity(model, wrapper, scorer: OnnxPairScorer, left: np.ndarray, right: np.ndarray) -> dict[str, float]:
    with torch.inference_mode():
        reference = wrapper(torch.from_numpy(left), torch.from_numpy(right)).numpy()
    return _parity_report(model, scorer(left, right), reference)


def _parity_report(model, got: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far ONNX Runtime's raw scores ``got`` are from torch's ``reference``, and their probabilities."""
    got = got.astype(np.float64)
    gap = np.abs(got - reference)
    return {
        "pairs": len(got),
        "max_abs_probability": float(np.abs(model.calibrator(got) - model.calibrator(reference)).max()),
        "max_abs_logit": float(gap.max()),
        "max_rel_logit": float((gap / np.maximum(1.0, np.abs(reference))).max()),
    }


@contextlib.contextmanager
def _quiet():
    """The torch exporter narrates every step on stdout and warns about optional packages; keep it to the log."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        log.debug("torch.onnx: %s", buffer.getvalue())
