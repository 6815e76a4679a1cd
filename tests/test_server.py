"""edgellm serve: a real uvicorn server on loopback, called by the official openai client and by
raw HTTP (httpx), serving the tiny model exported by the fixtures."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import uvicorn

import edgellm
from edgellm.server.openai_api import CHAT_STOPS
from edgellm.server.app import create_app
from serving import SlowGenerator, running

FINISH = {"eos": "stop", "length": "length"}


@pytest.fixture(scope="module")
def model(tiny_folder):
    return edgellm.load(tiny_folder)


@pytest.fixture(scope="module")
def server(model):
    with running(model, max_concurrency=2, queue_size=8) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def health(url):
    return httpx.get(url + "/health").json()


# ---- the openai client -------------------------------------------------------------------------

def test_completion_matches_the_library(client, model):
    expected = model.generate("ROMEO:", max_new_tokens=24, temperature=0.9, seed=3)
    for prompt in ("ROMEO:", ["ROMEO:"]):
        reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0.9, seed=3)
        assert reply.object == "text_completion" and reply.model == "tiny"
        assert reply.choices[0].text == expected.text
        assert reply.choices[0].finish_reason == FINISH[expected.finish_reason]
        assert reply.usage.prompt_tokens == len(model.tokenizer.encode("ROMEO:"))
        assert reply.usage.completion_tokens == len(expected.token_ids)
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_completion_equals_plain(client, model):
    expected = model.generate("JULIET:", max_new_tokens=20, temperature=1.0, top_p=0.9, seed=8)
    chunks = list(client.completions.create(model="tiny", prompt="JULIET:", max_tokens=20, temperature=1.0,
                                            top_p=0.9, seed=8, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and len(chunks) > 3
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.text
    assert chunks[-2].choices[0].finish_reason == FINISH[expected.finish_reason]
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(expected.token_ids)


def test_chat_plain_and_streamed(client, model):
    messages = [{"role": "system", "content": "You speak in verse."}, {"role": "user", "content": "Who art thou?"}]
    result = model.generate(model.folder.render_chat(messages), max_new_tokens=40, temperature=1.0, seed=11)
    full = result.text
    cut = min([i for i in (full.find(s) for s in CHAT_STOPS) if i >= 0], default=len(full))
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, temperature=1.0, seed=11)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == full[:cut].lstrip()
    assert reply.choices[0].finish_reason == ("stop" if cut < len(full) else FINISH[result.finish_reason])
    assert reply.usage.prompt_tokens == len(model.tokenizer.encode(model.folder.render_chat(messages)))

    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, temperature=1.0,
                                                 seed=11, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason


def test_chat_renders_the_folders_own_template(tiny_folder, tmp_path):
    """A folder whose tokenizer_config.json carries an edited chat_template chats over HTTP with it,
    as `edgellm chat` does."""
    from edgellm.chat import template as chat_template

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    edited = "{{ 'A play in one act.\n' }}" + config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": edited}))
    own = edgellm.load(folder)
    messages = [{"role": "user", "content": "Who art thou?"}]
    prompt = chat_template.render(edited, messages)
    assert prompt.startswith("A play in one act.\nUser: Who art thou?")
    with running(own) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    full = own.generate(prompt, max_new_tokens=20, temperature=0).text
    cut = min([i for i in (full.find(s) for s in CHAT_STOPS) if i >= 0], default=len(full))
    assert reply.usage.prompt_tokens == len(own.tokenizer.encode(prompt))
    assert reply.choices[0].message.content == full[:cut].lstrip()


def test_stop_strings_end_the_text(client, model):
    full = model.generate("KING:", max_new_tokens=40, temperature=1.0, seed=5).text
    assert len(full) > 16, full
    stop = full[12:15]
    expected = full[:full.find(stop)]
    reply = client.completions.create(model="tiny", prompt="KING:", max_tokens=40, temperature=1.0, seed=5,
                                      stop=["never-in-the-text", stop])
    assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="KING:", max_tokens=40, temperature=1.0, seed=5,
                                         stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_max_tokens_is_capped_by_the_context(client, model):
    reply = client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=100_000, temperature=0)
    room = model.config.context_length - reply.usage.prompt_tokens
    assert 0 < reply.usage.completion_tokens <= room
    assert (reply.choices[0].finish_reason == "length") == (reply.usage.completion_tokens == room)


def test_the_client_sees_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="tiny", prompt="ROMEO:", temperature=-1)
    assert error.value.status_code == 400 and error.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="ROMEO:")


# ---- raw HTTP ----------------------------------------------------------------------------------

BAD = [  # body, status, param
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({}, 400, "prompt"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "a", "n": 0}, 400, "n"),
    ({"prompt": "a", "seed": -1}, 400, "seed"),
    ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": "a", "frequency_penalty": 2.5}, 400, "frequency_penalty"),
    ({"prompt": "a", "suffix": "x"}, 400, "suffix"),
    ({"prompt": "a", "unknown_field": 1}, 400, "unknown_field"),
    ({"prompt": "a", "stream": "yes"}, 400, "stream"),
    ({"prompt": "ROMEO " * 200}, 400, "prompt"),
    ({"prompt": "a", "model": "other"}, 404, "model"),
    (b"x" * (2 << 20), 413, None),
]


def post(url, body, path="/v1/completions", **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={"Content-Type": "application/json"}, **kwargs)


def assert_openai_error(response, status, param):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param, error


def test_bad_requests_get_openai_errors(server):
    for body, status, param in BAD:
        assert_openai_error(post(server, body), status, param)
    chat_bad = [({"messages": []}, "messages"), ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
                ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content")]
    for body, param in chat_bad:
        assert_openai_error(post(server, body, "/v1/chat/completions"), 400, param)
    assert_openai_error(httpx.get(server + "/v1/completions"), 405, None)
    assert_openai_error(httpx.get(server + "/v2/nothing"), 404, None)


def test_health_models_and_event_stream_format(server):
    assert health(server)["status"] == "ok"
    models = httpx.get(server + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert httpx.get(server + "/v1/models/tiny").json()["context_length"] == 64
    with httpx.stream("POST", server + "/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 6}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_bad_request_amid_good_ones_affects_none(server, model):
    good = {seed: model.generate("ROMEO:", max_new_tokens=16, temperature=1.0, seed=seed).text for seed in range(6)}
    bodies = [{"prompt": "ROMEO:", "max_tokens": 16, "temperature": 1.0, "seed": s} for s in good]
    bodies[1:1] = [b"{not json", {"prompt": "a", "temperature": -1}, b"x" * (2 << 20)]
    barrier, results = threading.Barrier(len(bodies)), {}

    def call(i, body):
        barrier.wait()
        results[i] = post(server, body, timeout=60)

    threads = [threading.Thread(target=call, args=item) for item in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, body in enumerate(bodies):
        if isinstance(body, dict) and "seed" in body:
            assert results[i].status_code == 200 and results[i].json()["choices"][0]["text"] == good[body["seed"]]
        else:
            assert results[i].status_code in (400, 413) and "error" in results[i].json()


# ---- concurrency, queue, disconnects -------------------------------------------------------------

LONG = {"prompt": "ROMEO:", "max_tokens": 25, "temperature": 0}


def test_requests_run_in_parallel_and_the_loop_stays_free(tiny_folder):
    """Two requests generate at the same time, and the event loop answers /health meanwhile."""
    slow = SlowGenerator(tiny_folder)
    with running(slow, max_concurrency=2) as url:
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(post(url, LONG, timeout=60))) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: health(url)["running"] == 2)  # both generate at once
        during = health(url)
        assert during["status"] == "ok" and during["running"] == 2 and not replies  # answered mid-generation
        for t in threads:
            t.join()
    assert [r.status_code for r in replies] == [200, 200]


def test_full_queue_gets_429(tiny_folder):
    slow = SlowGenerator(tiny_folder)
    with running(slow, max_concurrency=1, queue_size=1) as url:
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(post(url, LONG, timeout=60))) for _ in range(2)]
        threads[0].start()
        wait_for(lambda: health(url)["running"] == 1)
        threads[1].start()
        wait_for(lambda: health(url)["queued"] == 1)
        refused = post(url, LONG)
        assert_openai_error(refused, 429, None)
        assert refused.json()["error"]["code"] == "queue_full" and refused.headers["retry-after"]
        for t in threads:
            t.join()
        assert [r.status_code for r in replies] == [200, 200]
        assert health(url)["running"] == health(url)["queued"] == 0


def test_a_client_that_disconnects_stops_its_generation(tiny_folder):
    slow = SlowGenerator(tiny_folder)
    body = {"prompt": "ROMEO:", "max_tokens": 50, "temperature": 0}
    with running(slow, max_concurrency=1) as url:
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as response:
            events = (line for line in response.iter_lines() if line)
            for _ in range(3):
                assert next(events).startswith("data: ")
        wait_for(lambda: health(url)["running"] == 0, timeout=2)
        stopped_at = slow.forwards
        time.sleep(0.3)
        assert slow.forwards == stopped_at < 20

        slow.forwards = 0
        with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
            post(url, body, timeout=0.5)
        wait_for(lambda: health(url)["running"] == 0, timeout=2)
        stopped_at = slow.forwards
        time.sleep(0.3)
        assert slow.forwards == stopped_at < 30


# ---- the command -------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_answers_then_exits_cleanly_on_signal(tiny_folder, sig):
    process = subprocess.Popen([sys.executable, "-m", "edgellm", "serve", str(tiny_folder), "--port", "0",
                                "--log-level", "warning"], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        line = process.stderr.readline()
        assert "serving 'tiny' at http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split()[0]
        wait_for(lambda: _answers(url + "/models"), timeout=30)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.completions.create(model="tiny", prompt="ROMEO:", max_tokens=5).usage.completion_tokens >= 1
        process.send_signal(sig)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.stderr.close()


def _answers(url):
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_command_errors_are_one_line(tiny_folder):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    for args in (["no-such-model"], [str(tiny_folder), "--port", str(taken.getsockname()[1])]):
        result = subprocess.run([sys.executable, "-m", "edgellm", "serve", *args], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1 and lines[-1].startswith("Error:") and "Traceback" not in result.stderr, args
    taken.close()
    help_text = subprocess.run([sys.executable, "-m", "edgellm", "serve", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--max-concurrency" in help_text.stdout


# ---- the chat page -----------------------------------------------------------------------------

def test_chat_page_is_served_unless_turned_off(model):
    """GET / is the chat page with the model's facts in it; its files are shipped; ui=False: 404.
    (tests/test_web.py runs the page in headless Chromium.)"""
    from starlette.testclient import TestClient

    with TestClient(create_app(model)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '"name": "tiny"' in page.text and f'"context": {model.config.context_length}' in page.text
        for name in ("page.js", "server.js", "browser.js", "page.css"):
            assert client.get(f"/ui/{name}").status_code == 200
    with TestClient(create_app(model, ui=False)) as client:
        assert client.get("/").status_code == 404
        assert client.get("/ui/page.js").status_code == 404
