"""The web page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by .ci/run) drives the page served by uvicorn on
127.0.0.1, and the result grid is checked against brute-force search."""

import shutil
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn

import keras_hash
from keras_hash.serve import create_app
from tests import reference
from tests.serve.conftest import expected_code

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y "
    "chromium chromium-driver; .ci/run installs them)",
)
WAIT = 30  # seconds, for every browser wait


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(world):
    index = keras_hash.index.load(world["index_path"])
    app = create_app(world["encoder"], index, world["catalog"])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), (
            "uvicorn did not start"
        )
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}/"
    server.should_exit = True
    thread.join(WAIT)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def wait_for(browser, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(lambda driver: condition(driver))


def grid(browser):
    """``[(id, distance)]`` of the result cards, once the search is done."""
    from selenium.webdriver.common.by import By

    state = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "results").get_attribute("data-state")
            in ("done", "error")
            and d.find_element(By.ID, "results").get_attribute("data-state")
        ),
    )
    assert state == "done", browser.find_element(By.ID, "status").text
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    return [
        (c.get_attribute("data-id"), int(c.get_attribute("data-distance")))
        for c in cards
    ]


def status_says(browser, text):
    """Waits until the newest search is drawn and its status line holds ``text``."""
    from selenium.webdriver.common.by import By

    wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "results").get_attribute("data-state") == "done"
            and text in d.find_element(By.ID, "status").text
        ),
    )


def want(world, code, k):
    distances, ids = reference.knn(world["codes"], world["ids"], code, k)
    return [(str(i), int(d)) for d, i in zip(distances[0], ids[0], strict=True)]


def test_upload_click_and_controls(server, browser, world, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait_for(
        browser,
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
        ),
    )
    assert "32-bit codes" in browser.find_element(By.ID, "info").text

    # Upload: the grid equals brute force over the model's own code.
    query = tmp_path / "query.jpg"
    query.write_bytes(world["queries"][0])
    browser.execute_script("document.getElementById('results').dataset.state = ''")
    browser.find_element(By.ID, "file").send_keys(str(query))
    code = expected_code(world["model"], world["queries"][0])
    assert grid(browser) == want(world, code, 24)
    shown_bits = browser.find_element(By.ID, "bits").get_attribute("data-bits")
    assert shown_bits == "".join(map(str, np.unpackbits(code[0])))
    cells = browser.find_elements(By.CSS_SELECTOR, "#bits span.on")
    assert len(cells) == shown_bits.count("1")
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#results .result img")
    assert len(thumbnails) == 24
    wait_for(
        browser,
        lambda d: all(
            d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", img
            )
            for img in thumbnails
        ),
    )

    # Clicking a result searches by its id: it comes first, at distance 0.
    target = browser.find_elements(By.CSS_SELECTOR, "#results .result")[5]
    target_id = target.get_attribute("data-id")
    browser.execute_script("document.getElementById('results').dataset.state = ''")
    target.click()
    status_says(browser, f"of id {target_id}")
    position = int(np.flatnonzero(world["ids"] == int(target_id))[0])
    assert grid(browser) == want(world, world["codes"][position : position + 1], 24)
    assert grid(browser)[0] == (target_id, 0)

    # k = 5, then radius mode: the same query again.
    k = browser.find_element(By.ID, "k")
    browser.execute_script("document.getElementById('results').dataset.state = ''")
    k.clear()
    k.send_keys("5")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", k)
    status_says(browser, "5 nearest codes")
    assert grid(browser) == want(world, world["codes"][position : position + 1], 5)
    radius = browser.find_element(By.ID, "radius")
    radius.clear()
    radius.send_keys("12")
    browser.execute_script("document.getElementById('results').dataset.state = ''")
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=radius]").click()
    status_says(browser, "within radius 12")
    lims, distances, ids = reference.range_search(
        world["codes"], world["ids"], world["codes"][position : position + 1], 12
    )
    expected = [(str(i), int(d)) for d, i in zip(distances, ids, strict=True)][:5]
    assert grid(browser) == expected
    assert (
        f"{len(ids)} codes within radius 12"
        in browser.find_element(By.ID, "status").text
    )


def test_bad_upload_shows_the_reason(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait_for(
        browser,
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
        ),
    )
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"these are notes, not a picture")
    browser.find_element(By.ID, "file").send_keys(str(junk))
    status = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "status").get_attribute("class") == "error"
            and d.find_element(By.ID, "status").text
        ),
    )
    assert status.startswith("400: the upload") and "is not a JPEG" in status
