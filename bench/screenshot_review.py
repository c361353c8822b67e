"""Render docs/img/review.png: the review page in headless Chromium (the system's, through its chromedriver) on a
matched synthetic scenario, with a pair shown and its cluster open.

    python bench/screenshot_review.py      # after bench/bench_scenarios.py made scenario_run_default and its match
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from common import OUT
from prodmatch.review import Review
from prodmatch.review.app import create_review_app

IMAGE = Path(__file__).resolve().parents[1] / "docs" / "img" / "review.png"


def main() -> None:
    data = OUT / "scenario_default_20000_8000_0"
    labels = Path(tempfile.mkdtemp()) / "labels.parquet"
    review = Review.open(OUT / "scenario_run_default", data, OUT / "scenario_match_default", labels, pool_items=2000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_review_app(review), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1280,1200", "--hide-scrollbars"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda b: b.find_element(By.ID, "view").is_displayed())
        body = browser.find_element(By.TAG_NAME, "body")
        for key in "mn":
            shown = browser.find_element(By.ID, "status").text
            body.send_keys(key)
            wait.until(lambda b, shown=shown: b.find_element(By.ID, "status").text != shown)
        browser.find_element(By.ID, "cluster-left").click()
        wait.until(lambda b: b.find_element(By.ID, "cluster").is_displayed())
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(IMAGE))
        print(f"wrote {IMAGE}")
    finally:
        browser.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
