"""Load on `edgellm serve`: concurrent openai clients on loopback against one client at a time.

Starts `edgellm serve` in a subprocess and sends streamed completions through the official
openai client (AsyncOpenAI): first from one client at a time, then from each --clients count at
once, then from one client again. Reports, for each run, generated tokens/s, latency p50/p95,
time to first token (TTFT) p50/p95 and failed requests; the ratio column is a run's tokens/s
over the mean of the two one-client runs (the gap between those two is the machine's noise).
Exits 1 if any request failed.

    python bench/server_load.py --model shakespeare --clients 32 64 --requests 128 --max-tokens 48
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import httpx
import openai

PROMPTS = ["ROMEO:", "JULIET:", "First Citizen:", "KING RICHARD III:", "MENENIUS:", "To be, or not",
           "O, what a", "Now is the winter"]


async def one_request(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> tuple[float, float, int]:
    """(latency s, time to first token s, completion tokens) of one streamed completion."""
    begun = time.perf_counter()
    first, tokens = None, 0
    stream = await client.completions.create(model=model, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens,
                                             temperature=0.8, seed=i, stream=True,
                                             stream_options={"include_usage": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - begun
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    latency = time.perf_counter() - begun
    return latency, latency if first is None else first, tokens


async def load(url: str, model: str, requests: int, clients: int, max_tokens: int) -> dict:
    indexes, latencies, ttfts, counts = iter(range(requests)), [], [], {"tokens": 0, "failures": 0}
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
                             timeout=600)
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, http_client=http)

    async def worker():
        for i in indexes:
            try:
                latency, ttft, tokens = await one_request(client, model, i, max_tokens)
            except openai.OpenAIError as error:
                counts["failures"] += 1
                print(f"request {i} failed: {error}", file=sys.stderr)
                continue
            latencies.append(latency)
            ttfts.append(ttft)
            counts["tokens"] += tokens

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - started
    await client.close()
    return {"clients": clients, "seconds": seconds, "tokens_per_s": counts["tokens"] / seconds,
            "latency": quantiles(latencies), "ttft": quantiles(ttfts), "failures": counts["failures"],
            "requests": requests}


def quantiles(values: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return 1000 * statistics.median(ordered), 1000 * ordered[round(0.95 * (len(ordered) - 1))]


def run_server(model: str, max_concurrency: int | None, queue_size: int, threads: int | None):
    command = [sys.executable, "-m", "edgellm", "serve", model, "--port", "0", "--log-level", "warning",
               "--queue-size", str(queue_size)]
    if max_concurrency:
        command += ["--max-concurrency", str(max_concurrency)]
    if threads:
        command += ["--threads", str(threads)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    if " at http://" not in line:
        process.kill()
        sys.exit(f"edgellm serve did not start: {line}{process.stderr.read()}")
    print(line.strip(), file=sys.stderr)
    url = line.split(" at ")[1].split()[0]
    model_id = line.split("serving ")[1].split(" at ")[0].strip("'")
    for _ in range(300):
        try:
            if httpx.get(url + "/models").status_code == 200:
                return process, url, model_id
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    sys.exit("edgellm serve did not answer within 30 s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--requests", type=int, default=128, help="requests in each run")
    parser.add_argument("--sequential-requests", type=int, default=32, help="requests in each one-client run")
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 64], help="concurrent clients of each run")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-concurrency", type=int, help="the server's --max-concurrency (default: its own)")
    parser.add_argument("--threads", type=int, help="the server's onnxruntime intra-op threads")
    args = parser.parse_args()

    print(f"model {args.model}, completions of up to {args.max_tokens} tokens, {os.cpu_count()} CPUs",
          file=sys.stderr)
    process, url, model = run_server(args.model, args.max_concurrency, max(args.clients), args.threads)
    try:
        asyncio.run(load(url, model, 4, 1, 8))  # warm up
        runs = [asyncio.run(load(url, model, args.sequential_requests, 1, args.max_tokens))]
        runs += [asyncio.run(load(url, model, args.requests, clients, args.max_tokens)) for clients in args.clients]
        runs.append(asyncio.run(load(url, model, args.sequential_requests, 1, args.max_tokens)))
    finally:
        process.terminate()
        process.wait(timeout=30)

    base = (runs[0]["tokens_per_s"] + runs[-1]["tokens_per_s"]) / 2
    print("| clients | requests | tokens/s | vs one client | latency p50 / p95 | TTFT p50 / p95 | failed |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        (p50, p95), (t50, t95) = run["latency"], run["ttft"]
        print(f"| {run['clients']} | {run['requests']} | {run['tokens_per_s']:.0f} | {run['tokens_per_s'] / base:.2f}x "
              f"| {p50:.0f} / {p95:.0f} ms | {t50:.0f} / {t95:.0f} ms | {run['failures']} |")
    sys.exit(1 if any(run["failures"] for run in runs) else 0)


if __name__ == "__main__":
    main()
