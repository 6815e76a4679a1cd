"""The chat page: `edgellm serve` answers GET / with it (`--no-ui` turns it off), and `edgellm web`
serves the same page running the model inside the browser with onnxruntime-web (web.py).

The page is plain HTML, CSS and JavaScript in edgellm/server/static/, shipped in the package: no
build step, nothing loaded from the network. page.js draws the conversation and the settings;
what answers a message is one of two backends with the same interface: server.js streams the
reply from this server's /v1 endpoints (server-sent events), browser.js runs model.onnx in the
page. What the page needs to know about the model (its name, context, whether it is a task
model, its default settings, whether JSON output is possible) is written into the HTML here.

Example:
    >>> from edgellm.folder import model_folder
    >>> folder = model_folder.read("en-fr")
    >>> info(folder, model_folder.read_generation_config(folder), "server")["task"]
    True
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgellm.folder import model_folder
from edgellm.folder.generation_config import GenerationConfig
from edgellm.server.openai_api import CHAT_STOPS

STATIC = Path(__file__).parent / "static"
BACKENDS = ("server", "browser")


def info(folder: model_folder.ModelFolder, defaults: GenerationConfig, backend: str, json_output: str = "",
         name: str | None = None) -> dict:
    """What the page shows and sends: `json_output` is "" where the folder can constrain replies to
    JSON, else the reason it cannot (the switch is then off, with the reason beside it)."""
    assert backend in BACKENDS
    task = folder.meta.get("prompt_template") == "completion"
    data = folder.meta.get("provenance", {}).get("data") or []
    return {"name": name or folder.path.name, "context": folder.config.context_length, "task": task,
            "data": [str(d) for d in data], "backend": backend, "json_output": json_output,
            "eos": folder.special_tokens.get("eos_token_id"), "stops": [] if task else list(CHAT_STOPS),
            "defaults": {"temperature": defaults.temperature, "top_p": defaults.top_p,
                         "max_tokens": defaults.max_new_tokens, "seed": defaults.seed}}


def html(page_info: dict) -> str:
    """page.html with `page_info` in it (as JSON that cannot end its script element)."""
    text = (STATIC / "page.html").read_text(encoding="utf-8")
    blob = json.dumps(page_info).replace("</", "<\\/")
    return text.replace("{{ info }}", blob).replace("{{ name }}", _escape(page_info["name"]))


def routes(page_info: dict) -> list:
    """GET / (the page) and /ui/* (its scripts and style)."""
    body = html(page_info)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(body, headers={"Cache-Control": "no-cache"})

    return [Route("/", index), Mount("/ui", StaticFiles(directory=STATIC), name="ui")]


def json_output(generator) -> str:
    """"" if `generator` can constrain a reply to JSON (response_format json_object), else why not."""
    from edgellm.generation import constraints

    try:
        generator.compile(constraints.json())
    except (ValueError, ModuleNotFoundError) as error:
        return str(error)
    return ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
