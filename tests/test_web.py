"""The chat pages in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by selenium) loads the page of `edgellm serve` and the in-browser page of `edgellm web`
from real servers on 127.0.0.1, types a message, and reads the streamed reply from the page.
Greedy replies must equal the library's text.

Behind the `interop` marker: they need chromium, chromium-driver, selenium (interop extra) and
`npm install` in tests/interop (onnxruntime-web, tokenizers.js, jinja). With EDGELLM_SCREENSHOTS=DIR
the tests save each page's screenshot there (docs/img holds the ones docs/server.md shows):
    EDGELLM_SCREENSHOTS=docs/img python -m pytest tests/test_web.py -m interop
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import edgellm
from edgellm.generation import constraints
from edgellm.server.openai_api import CHAT_STOPS
from serving import SlowGenerator, running

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / "tests" / "interop" / "node_modules"
# Greedy texts are compared across runtimes whose int8 kernels round differently (WASM and native
# onnxruntime on any x86-64 CPU), so each message's greedy path keeps the top two logits at least
# 0.05 apart at every step (shakespeare 0.055, en-fr 0.41, babi-qa1 21, NEAR_THE_END 0.065). A
# near-tie can go either way: "ROMEO:" as a chat message has its top three first tokens within 0.005.
MESSAGES = {"shakespeare": "Come, sir.", "en-fr": "English: I love you.\nFrench:",
            "babi-qa1": "Mary moved to the bathroom.\nJohn went to the hallway.\nWhere is Mary?"}
NEW_TOKENS = 40
# a prompt of 99 tokens in the chat template: the context (128) ends the reply before NEW_TOKENS
NEAR_THE_END = "I do love thee well, my lord, and yet " * 8
SCREENSHOTS = {("serve", "shakespeare"): "chat-serve.png", ("web", "en-fr"): "chat-web.png"}


def library_reply(name: str, message: str, new_tokens: int = NEW_TOKENS, constraint=None) -> str:
    """What the library writes greedily: a chat model's reply to one user message (the folder's chat
    template, stopped at a new "User:" line, the space after "Assistant:" dropped), or a task
    model's completion of the prompt."""
    model = edgellm.load(name)
    if model.task_template:
        return model.generate(message, temperature=0, max_new_tokens=new_tokens).text
    prompt = model.folder.render_chat([{"role": "user", "content": message}])
    return model.generate(prompt, temperature=0, max_new_tokens=new_tokens, stop_strings=CHAT_STOPS,
                          constraint=constraint).text.lstrip()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "headless Chromium is missing: apt-get install -y chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,760"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


@contextmanager
def command(*args):
    """Run `edgellm ARGS --port 0` and yield the page's URL from the line it prints."""
    process = subprocess.Popen([sys.executable, "-m", "edgellm", *args, "--port", "0"], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    try:
        url = None
        while url is None:
            line = process.stderr.readline()
            assert line, f"edgellm {' '.join(args)} exited with {process.wait()}"
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            url = found and found.group() + "/"
        deadline = time.monotonic() + 30
        while True:  # the address is printed before the server accepts connections
            try:
                httpx.get(url)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, f"{url} never answered"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def state(browser) -> str:
    return browser.find_element("tag name", "body").get_attribute("data-state")


def wait_idle(browser, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while state(browser) != "idle":
        assert state(browser) != "failed", browser.find_element("css selector", ".error").text
        assert time.monotonic() < deadline, f"the page stayed {state(browser)!r}"
        time.sleep(0.05)


def ask(browser, url: str | None, message: str, **settings):
    """Load the page (unless url is None), set the settings, type `message` (Shift+Enter between lines) and send it;
    returns the reply's element once the page is idle again."""
    from selenium.webdriver.common.keys import Keys

    if url is not None:  # else: the page as it is
        browser.get(url)
        wait_idle(browser)
    for name, value in settings.items():
        field = browser.find_element("id", name)
        field.clear()
        field.send_keys(str(value))
    box = browser.find_element("id", "prompt")
    for i, line in enumerate(message.split("\n")):
        box.send_keys(*((Keys.SHIFT, Keys.ENTER, Keys.NULL) if i else ()), line)  # NULL: Shift up again
    assert box.get_attribute("value") == message
    browser.find_element("id", "send").click()
    wait_idle(browser)
    print(url, message[:24].replace("\n", " "), "|", browser.find_element("id", "status").text)  # -s shows it
    replies = browser.find_elements("css selector", ".assistant")
    return replies[-1] if replies else None


def screenshot(browser, page: str, name: str) -> None:
    folder = os.environ.get("EDGELLM_SCREENSHOTS")
    if folder and (page, name) in SCREENSHOTS:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / SCREENSHOTS[page, name]))


@pytest.mark.parametrize("name", list(MESSAGES))
def test_serve_page_streams_the_librarys_greedy_reply(browser, name):
    with command("serve", name, "--log-level", "warning") as url:
        reply = ask(browser, url, MESSAGES[name], temperature=0, max_tokens=NEW_TOKENS)
        assert reply is not None, browser.find_element("id", "messages").text
        assert reply.get_attribute("textContent") == library_reply(name, MESSAGES[name])
        if name == "shakespeare":  # a long reply comes in pieces, not in one block
            assert int(reply.get_attribute("data-pieces")) > 1
        header = browser.find_element("tag name", "header").text
        assert name in header and f"context {edgellm.load(name).config.context_length} tokens" in header
        assert browser.find_element("id", "task").is_displayed() == (name != "shakespeare")
        screenshot(browser, "serve", name)
        if name == "shakespeare":
            reply = ask(browser, url, NEAR_THE_END, temperature=0, max_tokens=NEW_TOKENS)
            assert reply.get_attribute("textContent") == library_reply(name, NEAR_THE_END)
            # the JSON switch: response_format json_object, the library's constrained text
            browser.find_element("id", "clear").click()
            browser.find_element("id", "json").click()
            reply = ask(browser, None, MESSAGES[name])
            expected = library_reply(name, MESSAGES[name], constraint=constraints.json())
            assert reply.get_attribute("textContent") == expected and isinstance(json.loads(expected), dict)


@pytest.mark.parametrize("name", list(MESSAGES))
def test_web_page_runs_the_model_in_the_browser(browser, name):
    with command("web", name, "--node-modules", str(NODE_MODULES)) as url:
        reply = ask(browser, url, MESSAGES[name], max_tokens=NEW_TOKENS)
        assert reply is not None, browser.find_element("id", "messages").text
        assert reply.get_attribute("textContent") == library_reply(name, MESSAGES[name])
        assert "runs in this browser" in browser.find_element("id", "about").text
        screenshot(browser, "web", name)
        if name == "shakespeare":
            reply = ask(browser, url, NEAR_THE_END, max_tokens=NEW_TOKENS)
            assert reply.get_attribute("textContent") == library_reply(name, NEAR_THE_END)
            # Stop at once: the page's loop lets the click in between steps
            browser.find_element("id", "clear").click()  # a new conversation
            browser.find_element("id", "max_tokens").clear()
            browser.find_element("id", "max_tokens").send_keys("120")
            browser.find_element("id", "prompt").send_keys("ROMEO:")
            browser.find_element("id", "send").click()
            browser.find_element("id", "stop").click()
            wait_idle(browser)
            assert browser.find_element("id", "status").text == "stopped"
        # a prompt longer than the context: the page says so, as the server would
        reply = ask(browser, url, "word " * 200, max_tokens=NEW_TOKENS)
        error = browser.find_element("css selector", ".error").text
        assert f"context is {edgellm.load(name).config.context_length} tokens" in error


def test_serve_page_shows_the_servers_errors(browser):
    with command("serve", "en-fr", "--log-level", "warning") as url:
        ask(browser, url, "English: " + "I love you. " * 40 + "\nFrench:")
        assert "400: The prompt is" in browser.find_element("css selector", ".error").text
        assert "context is 40 tokens" in browser.find_element("css selector", ".error").text


def test_stop_button_and_queue_full(browser):
    """A slow model (each step 0.04 s longer): Stop ends the reply and the server stops its
    generation; a request beyond the queue shows the 429 message."""
    with running(SlowGenerator("shakespeare"), max_concurrency=1, queue_size=0) as base:
        browser.get(base + "/")
        wait_idle(browser)
        temperature = browser.find_element("id", "temperature")
        temperature.clear()
        temperature.send_keys("0")  # greedy: the reply runs to the context's end, about 5 s here
        browser.find_element("id", "prompt").send_keys("ROMEO:")
        browser.find_element("id", "send").click()
        reply = browser.find_element("css selector", ".assistant")
        deadline = time.monotonic() + 20
        while int(reply.get_attribute("data-pieces") or 0) < 3:
            assert time.monotonic() < deadline, "no streamed pieces"
            time.sleep(0.02)
        browser.find_element("id", "stop").click()
        wait_idle(browser)
        assert browser.find_element("id", "status").text == "stopped"
        deadline = time.monotonic() + 5
        while httpx.get(base + "/health").json()["running"]:
            assert time.monotonic() < deadline, "the server kept generating after Stop"
            time.sleep(0.05)
        with httpx.stream("POST", base + "/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 200,
                                                                  "temperature": 0, "stream": True}) as held:
            lines = held.iter_lines()  # kept: a dropped iterator would close the connection
            next(lines)  # the slot is taken until this request ends
            browser.find_element("id", "prompt").send_keys("JULIET:")
            browser.find_element("id", "send").click()
            wait_idle(browser)
            assert browser.find_elements("css selector", ".error"), browser.find_element("id", "messages").text
            assert browser.find_element("css selector", ".error").text.startswith("429: The server is busy")
