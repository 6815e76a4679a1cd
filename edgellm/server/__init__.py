"""`edgellm serve` (the `serve` extra): OpenAI's completions and chat API over one model.

app.py holds the routes and streaming, openai_api.py the request checks and response bodies,
workers.py the generations in worker threads with their queue, process.py the listening process
and its shutdown. Nothing outside this package imports starlette or uvicorn.
"""
