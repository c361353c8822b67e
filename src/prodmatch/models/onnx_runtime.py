"""ONNX Runtime sessions over a run's exported graphs: what a model scores with after ``use_runtime("onnx")``.

:mod:`prodmatch.export` writes ``model.onnx`` and ``onnx.json`` (the parity check, and the hash of the weights the
graph was made from); this module only reads them, and refuses a graph exported from other weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from prodmatch.config import INFERENCE_BATCH
from prodmatch.errors import ModelError
from prodmatch.models.base import ENCODER_DIR, ONNX_FILE, ONNX_META_FILE, WEIGHTS_FILE

__all__ = ["OnnxPairScorer", "TextOnnxSession", "load_onnx_scorer", "load_text_onnx", "weights_digest"]


class TextOnnxSession:
    """An ONNX Runtime session over a text model's ``model.onnx``: ``session(inputs)`` -> its float32 output,
    fed the token tensors its graph declares."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self.session = cpu_session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: dict) -> np.ndarray:
        feeds = {k: np.ascontiguousarray(np.asarray(inputs[k]), dtype=np.int64) for k in self.inputs}
        return self.session.run(None, feeds)[0].astype(np.float32, copy=False)


def load_text_onnx(run_dir: str | Path, threads: int = 1) -> TextOnnxSession:
    """The ONNX session of a text model's run directory, after checking it was exported from its weights."""
    return TextOnnxSession(checked_onnx(Path(run_dir)), threads)


class OnnxPairScorer:
    """An ONNX Runtime session over a ``model.onnx``: ``scorer(left, right)`` -> (B,) float32 logits.

    Args:
        path: the ONNX file.
        threads: intra-op threads; 1 gives the lowest latency for small requests under concurrency.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self.session = cpu_session(path, threads)

    def __call__(self, left: np.ndarray, right: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Logits of the pairs (left[i], right[i]) of item-feature rows."""
        return self._batched(len(left), lambda sl: (left[sl], right[sl]), batch_size)

    def score_rows(
        self, features: np.ndarray, left: np.ndarray, right: np.ndarray, batch_size: int = INFERENCE_BATCH
    ) -> np.ndarray:
        """Logits of the pairs of rows (left[i], right[i]) of ``features``, gathered one batch at a time."""
        return self._batched(len(left), lambda sl: (features[left[sl]], features[right[sl]]), batch_size)

    def _batched(self, n: int, take, batch_size: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        for s in range(0, n, batch_size):
            a, b = take(slice(s, s + batch_size))
            feeds = {
                "left": np.ascontiguousarray(a, dtype=np.float32),
                "right": np.ascontiguousarray(b, dtype=np.float32),
            }
            out[s : s + batch_size] = self.session.run(None, feeds)[0]
        return out


def cpu_session(path: str | Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and one inter-op thread, quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_onnx_scorer(run_dir: str | Path, threads: int = 1) -> OnnxPairScorer:
    """The ONNX scorer of a run directory, after checking it was exported from the current weights."""
    return OnnxPairScorer(checked_onnx(Path(run_dir)), threads)


def checked_onnx(run_dir: Path) -> Path:
    path, meta_path = run_dir / ONNX_FILE, run_dir / ONNX_META_FILE
    if not path.exists() or not meta_path.exists():
        raise ModelError(f"{run_dir} has no {ONNX_FILE}; run `prodmatch export {run_dir}` first")
    meta = json.loads(meta_path.read_text())
    if meta.get("weights_sha256") != weights_digest(run_dir):
        raise ModelError(
            f"{path} was exported from other weights than {run_dir}'s current ones; "
            f"run `prodmatch export {run_dir}` again"
        )
    return path


def weights_digest(run_dir: Path) -> str:
    """SHA-256 of a run's weights: a network's weights file, or a text model's encoder weights."""
    run_dir = Path(run_dir)
    candidates = [run_dir / WEIGHTS_FILE] + [
        run_dir / ENCODER_DIR / f for f in ("model.safetensors", "pytorch_model.bin")
    ]
    for path in candidates:
        if path.exists():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    raise ModelError(f"{run_dir} holds no weights ({', '.join(str(p) for p in candidates)}); train it again")
