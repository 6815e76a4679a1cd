"""`edgellm serve`: an OpenAI-compatible HTTP server around one model (the `serve` extra).

POST /v1/completions and /v1/chat/completions (streamed as server-sent events with
`"stream": true`), GET /v1/models and GET /health. Request bodies are checked in
`openai_api.py`; this file runs them. GET / is the chat page (page.py; off with ui=False).

Generation runs off the event loop, so it keeps answering while the model computes: the running
requests decode together in one continuous batch (batcher.py), or each in a worker thread for a
folder that cannot batch (workers.py). At most `max_concurrency` sequences decode at once, at
most `queue_size` more requests wait for a turn, and any request beyond that gets 429. A client
that disconnects stops its generation before the next token. `edgellm serve` runs the app in a
process (process.py).

Example:
    >>> import edgellm, uvicorn
    >>> app = create_app(edgellm.load("shakespeare"), max_concurrency=8)
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgellm.folder import json_file
from edgellm.generator import Generator
from edgellm.server import openai_api as api
from edgellm.server import page
from edgellm.server import responses
from edgellm.server.workers import Job, Workers
from edgellm.session.batching import PromptTooLong, fit_context

MAX_BODY_BYTES = 1 << 20


class Server:
    """The routes and what they share: the model and its workers."""

    def __init__(self, generator: Generator, model_id: str, workers: Workers, max_body_bytes: int):
        self.generator, self.model_id, self.workers = generator, model_id, workers
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())

    # ---- routes ------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.model_id, **self.workers.stats()})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        if request.path_params["model"] != self.model_id:
            raise api.RequestError(f"No model {request.path_params['model']!r} here. Received: "
                                   f"{request.path_params['model']!r}. This server has {self.model_id!r}.",
                                   "model", "model_not_found", 404)
        return JSONResponse(self._model_card())

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    def _model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "edgellm",
                "context_length": self.generator.config.context_length}

    # ---- one generation request --------------------------------------------------------------

    async def _complete(self, request: Request, chat: bool) -> Response:
        body = await self._read_json(request)
        parsed = api.parse_chat(body, self.generator.task_template) if chat \
            else api.parse_completion(body)
        if parsed.model not in (None, self.model_id):
            raise api.RequestError(f"No model {parsed.model!r} here. Received: model={parsed.model!r}. "
                                   f"Use {self.model_id!r} (GET /v1/models).", "model", "model_not_found", 404)
        if not self.workers.admit():
            raise api.RequestError(f"The server is busy: {self.workers.max_concurrency} sequences running and "
                                   f"{self.workers.queue_size} waiting. Retry later.", None, "queue_full", 429,
                                   "rate_limit_error")
        try:  # tokenizing a long prompt takes a while: keep it off the event loop
            job = await asyncio.get_running_loop().run_in_executor(None, self._job, parsed, chat)
        except BaseException:
            self.workers.leave()
            raise
        id = responses.new_id(chat)
        if parsed.stream:
            return _EventStream(self._events(job, parsed, id, chat), self.workers.leave)
        try:
            choices = await _unless_disconnected(request, self._collect(job))
        finally:
            self.workers.leave()
        if choices is None:
            return Response(status_code=499)  # nobody is listening any more
        counts = responses.usage(len(job.prompt_ids), job.completion_tokens)
        return JSONResponse(responses.completion_body(chat, id, self.model_id, choices, counts))

    def _job(self, parsed: api.Request, chat: bool) -> Job:
        try:
            config = self.generator.settings(**parsed.settings)
        except ValueError as error:
            message, param = str(error), None
            for setting, name in parsed.names.items():
                if message.startswith(setting) or (setting == "logit_bias" and "logit_bias" in message):
                    message, param = message.replace(setting, name), name
            raise api.RequestError(message, param) from None
        param = "messages" if chat else "prompt"
        try:  # the library's one path from text to ids: the task template, then the context
            prompt_ids = self._prompt_ids(parsed, config)
        except PromptTooLong as error:
            raise api.RequestError(f"The prompt is {error.tokens} tokens but the model's context is {error.context} "
                                   "tokens. Shorten the prompt.", param, "context_length_exceeded") from None
        except ValueError as error:
            raise api.RequestError(str(error), param) from None
        if parsed.constraint is not None:
            try:
                self.generator.compile(parsed.constraint)
            except (ValueError, ModuleNotFoundError) as error:
                raise api.RequestError(str(error), "response_format") from None
        # a chat reply follows "Assistant:"; the space the model puts there is not part of it
        try:
            job = Job(self.generator, prompt_ids, config, parsed.stop, strip_leading=chat,
                      constraint=parsed.constraint, logprobs=parsed.logprobs, echo=parsed.echo,
                      score_only=parsed.score_only)
        except ValueError as error:  # the stop strings are checked where they join the settings
            raise api.RequestError(str(error).replace("stop_strings", "stop"), "stop") from None
        if job.n > self.workers.max_concurrency:
            raise api.RequestError(f"n must be at most {self.workers.max_concurrency}, the sequences this server "
                                   f"decodes at once (--max-concurrency). Received: n={job.n}", "n")
        return job

    def _prompt_ids(self, parsed: api.Request, config) -> list[int]:
        """Text goes through the library's one path, chat messages through the folder's chat template
        (as `edgellm chat`'s); token ids (completions) are taken as they are."""
        prompt, generator = parsed.prompt, self.generator
        if parsed.messages is not None:
            prompt = generator.folder.encode_chat(generator.tokenizer, parsed.messages)
        elif isinstance(prompt, str):
            return self.generator.encode_prompt(prompt, config)
        vocab = self.generator.config.vocab_size
        if max(prompt) >= vocab:
            raise ValueError(f"Token ids must be below the vocabulary size {vocab}. Received: {max(prompt)} in prompt.")
        return fit_context(prompt, self.generator.config.context_length, config.max_new_tokens, config.truncate)

    async def _collect(self, job: Job) -> list[responses.Choice]:
        choices = [responses.Choice("", "", None if job.logprobs is None else []) for _ in range(job.n)]
        async with contextlib.aclosing(self.workers.pieces(job)) as batches:
            async for pieces in batches:
                for index, text, tokens in pieces:
                    choices[index].text += text
                    if tokens:
                        choices[index].tokens += tokens
        for choice, reason in zip(choices, job.finish_reasons):
            choice.finish_reason = reason
        return choices

    async def _events(self, job: Job, parsed: api.Request, id: str, chat: bool) -> AsyncIterator[str]:
        model = self.model_id
        offsets = [0] * job.n  # completions' text_offset: characters sent so far in each choice
        if chat:
            for index in range(job.n):
                yield _sse(responses.chunk_body(chat, id, model, "", role=True, index=index))
        try:
            async with contextlib.aclosing(self.workers.pieces(job)) as batches:
                async for pieces in batches:  # one chunk per choice for what came together
                    for index, text, tokens in _merged(pieces):
                        yield _sse(responses.chunk_body(chat, id, model, text, index=index, tokens=tokens,
                                                        offset=offsets[index]))
                        offsets[index] += len(text)
            for index, reason in enumerate(job.finish_reasons):
                yield _sse(responses.chunk_body(chat, id, model, None, reason, index=index))
            if parsed.include_usage:
                counts = responses.usage(len(job.prompt_ids), job.completion_tokens)
                yield _sse(responses.usage_chunk(chat, id, model, counts))
        except Exception as error:  # the status line has gone out: the stream is the only way to tell
            yield _sse(api.error_body(f"Generation failed: {error}", "server_error"))
        yield "data: [DONE]\n\n"

    async def _read_json(self, request: Request) -> dict:
        too_large = api.RequestError(f"The request body is larger than {self.max_body_bytes} bytes. "
                                     "Send a shorter prompt.", None, "request_too_large", 413)
        length = request.headers.get("content-length", "0")
        if not (length.isascii() and length.isdigit()):  # "²" is a digit to isdigit, not to int
            raise api.RequestError(f"Bad Content-Length header. Received: {length!r}")
        if int(length) > self.max_body_bytes:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise too_large
        try:
            doc = json_file.parse(bytes(body), "The request body")
        except ValueError as error:
            raise api.RequestError(f"{error} Send a JSON object.") from None
        if not isinstance(doc, dict):
            raise api.RequestError(f"The request body must be a JSON object. Received: {type(doc).__name__}")
        return doc


class _EventStream(StreamingResponse):
    """Server-sent events that always close their generator (and so stop its job) when the
    response ends, however it ends: finished, client gone, or server shutting down."""

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self._on_close()


def _merged(pieces: list[tuple]) -> list[tuple]:
    """The pieces of each choice joined into one, (index, text, tokens), in the order choices came."""
    merged: dict[int, tuple] = {}
    for index, text, tokens in pieces:
        if index in merged:
            _, before, earlier = merged[index]
            tokens = earlier + tokens if earlier is not None and tokens is not None else earlier or tokens
            text = before + text
        merged[index] = (index, text, tokens)
    return list(merged.values())


def _sse(doc: dict) -> str:
    return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"


async def _unless_disconnected(request: Request, work):
    """Run the coroutine `work`, cancelling it if the client disconnects first (then None)."""
    task = asyncio.ensure_future(work)

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task.done() and not task.cancelled() else None


# ---- the app ---------------------------------------------------------------

def create_app(generator: Generator, model_id: str | None = None, max_concurrency: int | None = None,
               queue_size: int = 64, max_body_bytes: int = MAX_BODY_BYTES, ui: bool = True) -> Starlette:
    """The ASGI app serving `generator` with OpenAI's API.

    Args:
        generator: a loaded model (`edgellm.load`).
        model_id: the name clients use in "model" (default: the model folder's name).
        max_concurrency: sequences decoding at once (a request takes one per choice, its `n`):
            the rows of the continuous batch, default 32; for a folder that cannot batch (a
            concat cache, or a GPU session), worker threads, default 2.
        queue_size: requests waiting for a turn; more get 429.
        max_body_bytes: larger request bodies get 413.
        ui: answer GET / with the chat page (page.py).
    """
    if not generator.task_template:  # a chat template that fails on any conversation refuses to start
        generator.folder.render_chat([{"role": "user", "content": "Hello"}])
    workers = Workers(generator, max_concurrency, queue_size)
    server = Server(generator, model_id or generator.folder.path.name, workers, max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        workers.close()

    routes = [Route("/health", server.health), Route("/v1/models", server.models),
              Route("/v1/models/{model:path}", server.model),
              Route("/v1/completions", server.completions, methods=["POST"]),
              Route("/v1/chat/completions", server.chat_completions, methods=["POST"])]
    if ui:
        routes += page.routes(page.info(generator.folder, generator.defaults, "server", page.json_output(generator),
                                        server.model_id))
    handlers = {api.RequestError: _request_error, ValueError: _bad_request, HTTPException: _http_error,
                Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = server
    return app


async def _request_error(request: Request, error: api.RequestError) -> Response:
    headers = {"Retry-After": "1"} if error.status == 429 else None
    return _ErrorResponse(error.body(), status_code=error.status, headers=headers)


async def _bad_request(request: Request, error: ValueError) -> Response:
    """A library ValueError on a request's path is bad input (the library's convention), so a 400,
    never a 500, even where no RequestError names the field."""
    return _ErrorResponse(api.error_body(str(error), "invalid_request_error"), status_code=400)


async def _http_error(request: Request, error: HTTPException) -> Response:
    message = f"{error.detail}: {request.method} {request.url.path}. See GET /v1/models and docs/server.md."
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    return _ErrorResponse(api.error_body(message, "invalid_request_error", None, code), status_code=error.status_code)


async def _server_error(request: Request, error: Exception) -> Response:
    return _ErrorResponse(api.error_body(f"Internal error: {error}", "server_error"), status_code=500)


class _ErrorResponse(JSONResponse):
    """An error body in ASCII JSON: a message quoting the client's text stays sendable even when
    that text holds a lone surrogate (which has no UTF-8 form)."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")
