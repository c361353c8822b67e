"""prodmatch review: the label file, the queues, the page's API, and labels flowing back into training."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prodmatch import api
from prodmatch.cli import app
from prodmatch.config import TrainConfig
from prodmatch.errors import ConfigError, UnknownIdsError
from prodmatch.feedback import decided_pairs
from prodmatch.review.labels import LabelBook, check_writable

pytest.importorskip("fastapi")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def matched(gbdt_small_run, synth_dir, tmp_path_factory):
    from prodmatch.matching import MatchConfig, match_catalogue

    out = tmp_path_factory.mktemp("review") / "match"
    match_catalogue(gbdt_small_run, synth_dir, out, MatchConfig(k=10))
    return out


@pytest.fixture
def review(gbdt_small_run, synth_dir, matched, tmp_path):
    from prodmatch.review import Review

    return Review.open(gbdt_small_run, synth_dir, matched, tmp_path / "labels.parquet", reviewer="ann", pool_items=500)


def test_label_book_writes_every_decision_and_undoes_the_last(tmp_path):
    ids = pd.Index([1, 2, 3, 4])
    book = LabelBook.open(tmp_path / "labels.parquet", ids)
    book.add([(1, 2)], "match", "uncertain", "ann")
    book.add([(3, 1), (3, 2)], "no", "split", "ann")  # one decision, two rows
    on_disk = pd.read_parquet(tmp_path / "labels.parquet")
    assert on_disk.target.tolist() == [1, 0, 0] and on_disk.decision.tolist() == [0, 1, 1]
    assert book.undo()["pairs"] == [[3, 1], [3, 2]]
    assert pd.read_parquet(tmp_path / "labels.parquet").variantid2.tolist() == [2]
    reopened = LabelBook.open(tmp_path / "labels.parquet", ids)  # a later session carries on from the file
    reopened.add([(4, 1)], "unsure", "audit", "bob")
    assert reopened.frame.target.isna().tolist() == [False, True]
    assert decided_pairs(tmp_path / "labels.parquet").to_dict("list") == {
        "variantid1": [1],
        "variantid2": [2],
        "target": [1],
    }


def test_another_runs_labels_are_refused_with_the_ids_named(tmp_path):
    book = LabelBook.open(tmp_path / "labels.parquet", pd.Index([1, 2, 3]))
    book.add([(1, 2)], "match", "uncertain", "ann")
    with pytest.raises(UnknownIdsError, match=r"2 ids that this catalogue does not hold, e.g. \[1, 2\]"):
        LabelBook.open(tmp_path / "labels.parquet", pd.Index([7, 8, 9]))


@pytest.mark.skipif(sys.platform != "linux", reason="/proc takes no files on Linux only")
def test_a_read_only_labels_path_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ConfigError, match="cannot be written"):
        check_writable(Path("/proc/labels.parquet"))
    with pytest.raises(ConfigError, match="does not exist"):
        check_writable(tmp_path / "missing" / "labels.parquet")
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        with pytest.raises(ConfigError, match="cannot be written"):
            check_writable(locked / "labels.parquet")


def test_review_command_refuses_a_read_only_path_in_one_line(gbdt_small_run, synth_dir, matched):
    r = invoke("review", gbdt_small_run, "--data", synth_dir, "--matches", matched, "--labels", "/proc/labels.parquet")
    assert r.exit_code == 2 and "cannot be written" in r.output


def test_queues_put_uncertain_pairs_first_and_audit_matches_only(review):
    first = review.next_pair("uncertain")
    p = np.clip(review.pool.score.to_numpy(), 1e-9, 1 - 1e-9)
    t = review.threshold
    distance = np.abs(np.log(p / (1 - p)) - np.log(t / (1 - t)))
    assert abs(np.log(first["score"] / (1 - first["score"])) - np.log(t / (1 - t))) == pytest.approx(distance.min())
    assert (review.pool.score < t).any() and (review.pool.score >= t).any()  # both sides of the threshold
    audit = review.next_pair("audit")
    assert audit["matched"]  # the audit samples the pairs match kept
    diverse = [review.queues["diverse"][i] for i in range(20)]
    clusters = review.pool.variantid1.map(review.clusters).to_numpy()[diverse]
    assert len(set(clusters[:5])) == 5  # one per cluster in turn


def test_page_api_labels_undoes_splits_and_audits(review, tmp_path):
    from fastapi.testclient import TestClient

    from prodmatch.review.app import create_review_app

    client = TestClient(create_review_app(review))
    page = client.get("/")
    assert page.status_code == 200 and "prodmatch review" in page.text and "http" not in page.text.split("<script>")[1]
    shown = []
    for word in ("match", "no", "unsure", "match", "no"):
        pair = client.get("/api/next", params={"queue": "uncertain"}).json()
        assert pair["explanation"]["contributions"] and pair["left"]["variantid"] == pair["variantid1"]
        shown.append((pair["variantid1"], pair["variantid2"]))
        body = {"variantid1": pair["variantid1"], "variantid2": pair["variantid2"], "label": word}
        assert client.post("/api/label", json=body).status_code == 200
    assert len(set(shown)) == 5  # a labelled pair is not offered again
    assert client.post("/api/undo").json()["undone"]["label"] == "no"
    audit = client.get("/api/next", params={"queue": "audit"}).json()
    client.post("/api/label", json={"variantid1": audit["variantid1"], "variantid2": audit["variantid2"],
                                    "label": "match", "queue": "audit"})  # fmt: skip
    cluster_id = audit["left"]["cluster"]
    cluster = client.get(f"/api/cluster/{cluster_id}").json()
    member = cluster["members"][0]["variantid"]
    split = client.post("/api/split", json={"cluster": cluster_id, "variantid": member}).json()
    assert split["labelled"] == len(cluster["members"]) - 1
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert labels.label.tolist()[:4] == ["match", "no", "unsure", "match"]
    assert (labels.queue == "split").sum() == split["labelled"] and labels.reviewer.eq("ann").all()
    saved = json.loads((tmp_path / "review.json").read_text())
    assert saved["audit"]["labelled"] == 1 and saved["audit"]["precision"] == 1.0
    assert client.post("/api/split", json={"cluster": cluster_id, "variantid": -1}).status_code == 400


def test_labels_flow_back_into_training(synth_dir, tmp_path):
    from conftest import SMALL

    train = pd.read_parquet(synth_dir / "train.parquet")
    test = pd.read_parquet(synth_dir / "test.parquet")
    book = LabelBook.open(tmp_path / "labels.parquet", pd.Index(np.concatenate([train.variantid1, train.variantid2,
                                                                               test.variantid1, test.variantid2])))  # fmt: skip
    row = train.iloc[0]
    book.add([(row.variantid2, row.variantid1)], "no" if row.target else "match", "uncertain", "ann")  # relabelled
    book.add([(test.variantid1.iat[0], test.variantid2.iat[0])], "match", "uncertain", "ann")  # a test pair
    book.add([(train.variantid1.iat[1], test.variantid2.iat[1])], "no", "uncertain", "ann")  # a new pair
    report = api.train(synth_dir, tmp_path / "run", model="gbdt", params=SMALL["gbdt"],
                       config=TrainConfig(labels=str(tmp_path / "labels.parquet")))  # fmt: skip
    counts = report.metrics["hygiene"]["review_labels"]
    assert {k: counts[k] for k in ("labels", "relabelled", "test_pairs_left_out", "new_pairs")} == {
        "labels": 3, "relabelled": 1, "test_pairs_left_out": 1, "new_pairs": 1,
    }  # fmt: skip
    assert counts["joined_training"] + counts["validation_items_left_out"] == 1


def test_review_labels_teach_but_never_validate(synth_dir, tmp_path):
    """A review's queues pick pairs for what they teach, not as scored pairs are drawn: new labelled pairs join
    the training side after the split, the validation pairs stay train.parquet's (bar a relabel), and a new
    pair with an item of validation is left out of training and counted (the group split holds items out)."""
    from prodmatch.io import read_catalogue

    cat = read_catalogue(synth_dir)
    plain = api.prepare_pairs(synth_dir, cat, TrainConfig())
    valid_ids = np.union1d(plain.valid.ids1, plain.valid.ids2)
    train_ids = np.union1d(plain.train.ids1, plain.train.ids2)
    test = pd.read_parquet(synth_dir / "test.parquet")
    known = {frozenset(p) for f in (plain.train, plain.valid) for p in zip(f.ids1, f.ids2, strict=True)}
    known |= {frozenset(p) for p in zip(test.variantid1, test.variantid2, strict=True)}
    fresh = [(a, b) for a, b in zip(train_ids[:-1:7], train_ids[1::7], strict=False) if {a, b} not in known][:20]
    touching = (valid_ids[0], train_ids[-1])  # one item of validation
    book = LabelBook.open(tmp_path / "labels.parquet", pd.Index(cat.ids))
    book.add(fresh, "no", "uncertain", "ann")
    book.add([touching], "match", "uncertain", "ann")
    taught = api.prepare_pairs(synth_dir, cat, TrainConfig(labels=str(tmp_path / "labels.parquet")))
    np.testing.assert_array_equal(taught.valid.ids1, plain.valid.ids1)
    np.testing.assert_array_equal(taught.valid.ids2, plain.valid.ids2)
    assert len(taught.train) == len(plain.train) + len(fresh)
    assert set(zip(taught.train.ids1[-len(fresh) :], taught.train.ids2[-len(fresh) :], strict=True)) == set(fresh)
    assert (taught.train.target[-len(fresh) :] == 0).all()
    counts = taught.hygiene["review_labels"]
    assert counts["joined_training"] == len(fresh) and counts["validation_items_left_out"] == 1


# ------------------------------------------------------------------------------------------ in a real browser


def _browser():
    """Headless Chromium from the system packages, through their chromedriver: nothing is downloaded."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("PRODMATCH_BROWSER_TEST") == "required":
            pytest.fail("chromium and chromium-driver are missing, and .ci/run requires the browser test")
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def served(review):
    """The review page on a free local port, served from a thread."""
    import socket
    import threading

    import uvicorn

    from prodmatch.review.app import create_review_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_review_app(review), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_in_a_browser_five_labels_by_keyboard_an_undo_and_a_split(served, review, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(served)
        wait.until(lambda b: b.find_element(By.ID, "view").is_displayed())
        body = browser.find_element(By.TAG_NAME, "body")
        for n, key in enumerate("mnumn", start=1):
            shown = browser.find_element(By.ID, "status").text
            body.send_keys(key)
            wait.until(lambda b, shown=shown: b.find_element(By.ID, "status").text != shown)
            wait.until(lambda b, n=n: b.find_element(By.ID, "progress").text.startswith(f"{n} labels"))
        shown = browser.find_element(By.ID, "status").text
        body.send_keys("z")
        wait.until(lambda b: b.find_element(By.ID, "progress").text.startswith("4 labels"))
        wait.until(lambda b: b.find_element(By.ID, "status").text != shown)  # the undone pair is shown again
        browser.find_element(By.ID, "cluster-left").click()
        wait.until(lambda b: b.find_element(By.ID, "cluster").is_displayed())
        members = len(browser.find_elements(By.CSS_SELECTOR, "#cluster button.split"))
        browser.find_elements(By.CSS_SELECTOR, "#cluster button.split")[0].click()
        wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("split out"))
        browser.save_screenshot(str(tmp_path / "review.png"))
    finally:
        browser.quit()
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert labels[labels.queue == "uncertain"].label.tolist() == ["match", "no", "unsure", "match"]
    assert (labels.queue == "split").sum() == members - 1 and (labels[labels.queue == "split"].target == 0).all()
    assert (tmp_path / "review.png").stat().st_size > 10_000
