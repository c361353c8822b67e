"""Catalogue matching that is right about its candidates: the oracle for any pair, mined hard negatives, and
calibration for the share of matches among the candidates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from typer.testing import CliRunner

from prodmatch.calibration import estimate_prior, expected_f1_threshold, expected_quality, shift_prior
from prodmatch.cli import app
from prodmatch.config import TrainConfig
from prodmatch.io import read_catalogue
from prodmatch.mining import mine_negatives
from prodmatch.oracle import Oracle
from prodmatch.pairs import load_pairs


def test_the_oracle_of_any_pair_equals_the_labelled_oracle_where_both_exist(synth_dir):
    oracle = Oracle.load(synth_dir)
    labelled = pd.read_parquet(synth_dir / "oracle.parquet")
    left, right = oracle.rows(labelled["variantid1"]), oracle.rows(labelled["variantid2"])
    np.testing.assert_array_equal(oracle.log_odds(left, right, prior="labelled"), labelled["score"].to_numpy())
    # the same evidence under the catalogue's prior: only the prior odds change, so the ranking within the
    # possible pairs is the same and the log-odds move by one constant
    possible = labelled["score"].to_numpy() > -1e3
    shift = oracle.log_odds(left, right, prior="catalogue")[possible] - labelled["score"].to_numpy()[possible]
    assert np.ptp(shift) < 1.5  # the three negative kinds' priors differ, so nearly, not exactly, one constant
    assert shift.mean() < 0  # matches are far rarer among all pairs than among the labelled ones
    assert oracle.prior_catalogue.sum() == pytest.approx(1.0)


def test_oracle_top_k_ranks_items_of_the_category_best_first(synth_dir):
    oracle = Oracle.load(synth_dir)
    queries = np.arange(0, len(oracle), 300)
    top = oracle.top_k(queries, 5)
    for q, row in zip(queries, top, strict=True):
        row = row[row >= 0]
        assert q not in row and (oracle.cat2[row] == oracle.cat2[q]).all()
        scores = oracle.log_odds(np.full(len(row), q), row)
        assert (np.diff(scores) <= 1e-9).all()
        others = np.flatnonzero((oracle.cat2 == oracle.cat2[q]) & (np.arange(len(oracle)) != q))
        assert scores[0] == pytest.approx(oracle.log_odds(np.full(len(others), q), others).max())


def test_mined_negatives_never_include_a_pair_the_labels_connect(synth_dir):
    cat = read_catalogue(synth_dir)
    train = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    held_out = np.arange(0, len(cat), 7)  # as if these were validation and test items
    mined, report = mine_negatives(cat, train, list(cat.modalities), per_item=3, k=10, exclude_items=held_out)
    assert report.mined == len(mined) > 0 and (mined.target == 0).all()
    # components of the positive labels: no mined pair inside one
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    pos = train.target > 0.5
    graph = sp.coo_matrix((np.ones(int(pos.sum())), (train.left[pos], train.right[pos])), shape=(len(cat),) * 2)
    _, comp = connected_components(graph, directed=False)
    assert not (comp[mined.left] == comp[mined.right]).any()
    assert report.linked_by_labels > 0  # the search did meet such pairs, and left them out
    key = lambda a, b: np.minimum(a, b).astype(np.int64) * len(cat) + np.maximum(a, b)  # noqa: E731
    assert not np.isin(key(mined.left, mined.right), key(train.left, train.right)).any()
    assert not np.isin(mined.right, held_out).any()  # neighbours are never validation or test items
    assert len(np.unique(key(mined.left, mined.right))) == len(mined)
    assert np.bincount(mined.left).max() <= 3 * 2  # per_item from each end


def test_far_negatives_come_from_the_whole_catalogue_and_never_from_the_labels(synth_dir):
    cat = read_catalogue(synth_dir)
    train = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    held_out = np.arange(0, len(cat), 7)
    args = dict(per_item=2, k=10, exclude_items=held_out, token_k=0)
    near, near_report = mine_negatives(cat, train, list(cat.modalities), **args)
    both, report = mine_negatives(cat, train, list(cat.modalities), far_per_item=2, **args)
    assert near_report.far == 0 and report.far > 0.9 * 2 * report.query_items  # nearly every draw kept
    assert len(both) > len(near)
    # the far ones reach down an item's list: most are not among its top-10 by the search vectors
    from prodmatch.candidates import modality_vectors

    vectors = modality_vectors(cat, list(cat.modalities))
    key = lambda a, b: np.minimum(a, b).astype(np.int64) * len(cat) + np.maximum(a, b)  # noqa: E731
    far = ~np.isin(key(both.left, both.right), key(near.left, near.right))
    assert far.sum() >= 0.9 * report.far  # the near ones drawn as without (a few far draws repeat a near pair)
    sim = (vectors[both.left[far]] * vectors[both.right[far]]).sum(1)
    near_sim = (vectors[near.left] * vectors[near.right]).sum(1)
    assert np.median(sim) < np.percentile(near_sim, 5)
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    pos = train.target > 0.5
    graph = sp.coo_matrix((np.ones(int(pos.sum())), (train.left[pos], train.right[pos])), shape=(len(cat),) * 2)
    _, comp = connected_components(graph, directed=False)
    assert not (comp[both.left] == comp[both.right]).any() and not np.isin(both.right, held_out).any()
    assert not np.isin(key(both.left, both.right), key(train.left, train.right)).any()
    assert (both.left != both.right).all() and len(np.unique(key(both.left, both.right))) == len(both)


def test_the_prior_estimate_recovers_a_known_share():
    """Scores with known class-conditional densities, calibrated where half the pairs match; the candidates
    hold 3 % matches. The EM estimate is within 0.5 points, and the shifted probabilities are calibrated."""
    rng = np.random.default_rng(0)
    share, n = 0.03, 200_000
    y = rng.random(n) < share
    x = np.where(y, rng.normal(2.0, 1.0, n), rng.normal(-2.0, 1.0, n))
    prob = expit(4.0 * x)  # the exact posterior where half the pairs match: log N(x;2,1)/N(x;-2,1) = 4x
    estimate = estimate_prior(prob, training_prior=0.5)
    assert estimate.prior == pytest.approx(share, abs=0.005)
    shifted = shift_prior(prob, 0.5, estimate.prior)
    assert shifted.mean() == pytest.approx(y.mean(), abs=0.005)
    threshold = expected_f1_threshold(shifted)
    precision, recall = expected_quality(shifted, threshold)
    kept = shifted >= threshold
    assert precision == pytest.approx(y[kept].mean(), abs=0.02)
    assert recall == pytest.approx(y[kept].sum() / y.sum(), abs=0.02)


def test_match_on_synthetic_data_reports_the_oracle_and_a_prior_near_the_truth(synth_dir, tmp_path):
    from conftest import SMALL
    from prodmatch import api

    run = tmp_path / "run"
    api.train(synth_dir, run, model="gbdt", params=SMALL["gbdt"], config=TrainConfig(epochs=2))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hygiene"]["hard_negatives"]["mined"] > 0
    # the catalogue job is calibrated on the validation items' mined negatives too
    assert metrics["jobs"]["catalogue"]["calibration_pairs"]["mined"] > 0
    out = tmp_path / "m"
    r = CliRunner().invoke(app, ["match", str(run), "-d", str(synth_dir), "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "shared rare values:" in r.output
    summary = json.loads((out / "summary.json").read_text())
    q, cal = summary["quality"], summary["calibration"]
    assert 0.0 < cal["training_prior"] < 1.0
    if cal["method"] == "em":  # within a factor of two of the true share, or given up on with a reason
        assert 0.5 * q["candidate_base_rate"] <= cal["prior"] <= 2.0 * q["candidate_base_rate"]
    else:
        assert cal["method"] == "none" and cal["reason"]
    assert 0.0 <= cal["estimated_precision"] <= 1.0 and 0.0 <= cal["estimated_recall_among_candidates"] <= 1.0
    assert 0.0 < q["candidate_ap"] <= q["oracle_candidate_ap"] + 0.05
    assert set(q["recall_at_k"]) == {"5", "10", "20", "50"}
    assert q["oracle_recall_at_k"]["20"] >= q["oracle_recall_at_k"]["5"]
    assert q["oracle_cluster_f1"] >= 0.5 and 0.0 <= q["best_threshold_f1"] <= 1.0
    assert summary["parameters"]["threshold"] < 0.99
    shared = summary["search"]["shared_values"]  # synth writes names and attributes: blocked on their rare values
    assert shared["tokens_kept"] > 0 and shared["tokens_purged"] > 0 and shared["neighbours"] > 0
    assert 0 <= shared["new_candidates"] <= shared["neighbours"]
    assert metrics["hygiene"]["hard_negatives"]["shared_value_neighbours"] > 0  # mining met them too

    # a labelled sample of candidates calibrates on them instead
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")["product_id"]
    matches = pd.read_parquet(out / "matches.parquet")
    sample = matches.sample(min(len(matches), 150), random_state=0)
    clusters = pd.read_parquet(out / "clusters.parquet").sample(300, random_state=1)["variantid"].to_numpy()
    sample = pd.concat([sample, pd.DataFrame({"variantid1": clusters[:150], "variantid2": clusters[150:]})])
    sample["target"] = truth.reindex(sample.variantid1).to_numpy() == truth.reindex(sample.variantid2).to_numpy()
    sample[["variantid1", "variantid2"]].assign(target=sample["target"].astype(int)).to_parquet(tmp_path / "s.parquet")
    r = CliRunner().invoke(
        app,
        [
            "match",
            str(run),
            "-d",
            str(synth_dir),
            "-o",
            str(out),
            "--overwrite",
            "--no-progress",
            "--labelled-sample",
            str(tmp_path / "s.parquet"),
        ],
    )
    assert r.exit_code == 0, r.output
    cal = json.loads((out / "summary.json").read_text())["calibration"]
    assert cal["method"] == "labelled-sample" and cal["sample_pairs"] == 300


def test_hidden_modalities_keep_one_and_zero_their_flags():
    import torch

    from prodmatch.training import _hide_modalities

    dims = [3, 2]
    x = torch.ones(2000, 3 + 2 + 2)
    x[:500, 3:5] = 0.0  # no picture
    x[:500, 6] = 0.0
    out = _hide_modalities(x, dims, 0.5, torch.Generator().manual_seed(0))
    flags = out[:, -2:]
    assert (flags.sum(dim=1) >= 1).all()  # never every modality
    assert torch.equal(out[:500], x[:500])  # an item with one modality keeps it
    hidden_text = flags[:, 0] == 0
    assert hidden_text.any() and (out[hidden_text, :3] == 0).all()
    # p(hidden) = p - p^2: an item whose every modality came up hidden keeps them all
    assert 0.2 < float((flags[500:] == 0).float().mean()) < 0.3
    assert torch.equal(_hide_modalities(x, dims, 0.0, torch.Generator()), x)


def test_items_missing_a_modality_get_candidates_by_the_ones_they_have(synth_dir, siamese_run):
    from prodmatch.matching import incomplete_item_candidates
    from prodmatch.models import load_model

    model = load_model(siamese_run)
    cat = read_catalogue(synth_dir, model.data_config())
    searchable = np.ones(len(cat), dtype=bool)
    left, right, n_incomplete = incomplete_item_candidates(model, cat, searchable, k=5)
    complete = np.ones(len(cat), dtype=bool)
    for name, _ in model.modalities_:
        complete &= cat.modalities[name].present
    assert n_incomplete == int((~complete).sum()) > 0
    assert (left < right).all() and (~complete[left] | ~complete[right]).all()
    # every incomplete item got its 5 neighbours (pairs may repeat between two incomplete items)
    incomplete_rows = np.flatnonzero(~complete)
    counts = np.bincount(np.concatenate([left, right]), minlength=len(cat))
    assert (counts[incomplete_rows] >= 5).all()


def test_the_optional_positive_unlabelled_filter_drops_mined_pairs_that_look_like_matches(synth_dir):
    from prodmatch.mining import drop_likely_positives

    cat = read_catalogue(synth_dir)
    train = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    mined, _ = mine_negatives(cat, train, list(cat.modalities), per_item=2, k=10)
    kept, dropped = drop_likely_positives(cat, train, mined, list(cat.modalities), threshold=0.2)
    assert dropped > 0 and len(kept) + dropped == len(mined)
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")["product_id"]
    same = lambda p: truth.reindex(p.ids1).to_numpy() == truth.reindex(p.ids2).to_numpy()  # noqa: E731
    assert same(kept).mean() < same(mined).mean()  # the unlabelled matches are what it drops most
    with pytest.raises(Exception, match="drop_mined_above"):
        TrainConfig(drop_mined_above=1.5)
