"""Load on `edgellm serve`: many concurrent clients on loopback, against the library run directly.

Starts `edgellm serve` in a subprocess for each --max-concurrency value, sends --requests
completions from --clients concurrent clients (httpx), and reports requests/s, generated
tokens/s, latency p50/p95 and failures. The baseline is the same requests run one after another
through `edgellm.load(...).generate` in this process, with no HTTP; the ratio column is the
server's tokens/s over the baseline's (the mean of a run before the servers and one after).
Exits 1 if any request failed.

    python bench/server_load.py --model models/shakespeare --clients 32 --requests 256
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

import edgellm

PROMPTS = ["ROMEO:", "JULIET:", "First Citizen:", "KING RICHARD III:", "MENENIUS:", "To be, or not",
           "O, what a", "Now is the winter"]


def request_body(i: int, max_tokens: int) -> dict:
    return {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0.8, "seed": i}


def baseline(model: str, requests: int, max_tokens: int, threads: int | None) -> dict:
    generator = edgellm.load(model, threads=threads)
    latencies, tokens = [], 0
    started = time.perf_counter()
    for i in range(requests):
        body = request_body(i, max_tokens)
        begun = time.perf_counter()
        result = generator.generate(body["prompt"], max_new_tokens=max_tokens, temperature=0.8, seed=i)
        latencies.append(time.perf_counter() - begun)
        tokens += len(result.token_ids)
    return summary("library, sequential", time.perf_counter() - started, latencies, tokens, failures=0)


async def load(url: str, requests: int, clients: int, max_tokens: int) -> tuple[float, list[float], int, int]:
    next_index, latencies, tokens, failures = iter(range(requests)), [], 0, 0

    async def client(http: httpx.AsyncClient):
        nonlocal tokens, failures
        for i in next_index:
            begun = time.perf_counter()
            try:
                response = await http.post(url + "/completions", json=request_body(i, max_tokens))
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - begun)
            if ok:
                tokens += response.json()["usage"]["completion_tokens"]
            else:
                failures += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return time.perf_counter() - started, latencies, tokens, failures


def run_server(model: str, max_concurrency: int, queue_size: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "edgellm", "serve", model, "--port", "0", "--log-level", "warning",
               "--max-concurrency", str(max_concurrency), "--queue-size", str(queue_size)]
    if threads:
        command += ["--threads", str(threads)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    if " at http://" not in line:
        process.kill()
        sys.exit(f"edgellm serve did not start: {line}{process.stderr.read()}")
    url = line.split(" at ")[1].split()[0]
    for _ in range(300):
        try:
            if httpx.get(url + "/models").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    sys.exit("edgellm serve did not answer within 30 s")


def summary(name: str, seconds: float, latencies: list[float], tokens: int, failures: int) -> dict:
    ordered = sorted(latencies)
    return {"name": name, "requests_per_s": len(latencies) / seconds, "tokens_per_s": tokens / seconds,
            "p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
            "failures": failures, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads, in the server and the baseline")
    args = parser.parse_args()

    print(f"model {args.model}, {args.requests} requests of up to {args.max_tokens} tokens, {args.clients} clients, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    rows = [baseline(args.model, args.requests, args.max_tokens, args.threads)]
    for concurrency in args.max_concurrency:
        process, url = run_server(args.model, concurrency, args.clients, args.threads)
        try:
            seconds, latencies, tokens, failures = asyncio.run(load(url, args.requests, args.clients, args.max_tokens))
        finally:
            process.terminate()
            process.wait(timeout=30)
        rows.append(summary(f"server, max-concurrency {concurrency}", seconds, latencies, tokens, failures))
    # run again: the gap between the two baselines is the run's noise (other work on the machine)
    rows.append(baseline(args.model, args.requests, args.max_tokens, args.threads))
    rows[-1]["name"] += ", again"

    base = (rows[0]["tokens_per_s"] + rows[-1]["tokens_per_s"]) / 2
    print("| run | requests/s | tokens/s | p50 latency | p95 latency | failed | tokens/s vs library |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['requests_per_s']:.1f} | {row['tokens_per_s']:.0f} | {row['p50_ms']:.0f} ms "
              f"| {row['p95_ms']:.0f} ms | {row['failures']} | {row['tokens_per_s'] / base:.2f}x |")
    sys.exit(1 if any(row["failures"] for row in rows) else 0)


if __name__ == "__main__":
    main()
