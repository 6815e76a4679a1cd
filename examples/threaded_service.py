"""One loaded model serving several threads at once, as a web app's worker pool would.

Each request runs its own generation (its own cache and sampler state); the onnxruntime
session is shared, and its runs are thread-safe.

    python examples/threaded_service.py --model shakespeare --workers 4
"""

import argparse
from concurrent.futures import ThreadPoolExecutor

import edgellm

REQUESTS = ["ROMEO:", "JULIET:", "First Citizen:", "KING HENRY:", "HAMLET:", "MERCUTIO:"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    model = edgellm.load(args.model)  # loaded once, shared by every worker

    def handle(prompt: str) -> str:
        result = model.generate(prompt, max_new_tokens=args.max_new_tokens, seed=0)
        return f"{prompt!r} -> {result.text!r} ({result.finish_reason}, {len(result.token_ids)} tokens)"

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for line in pool.map(handle, REQUESTS):
            print(line)


if __name__ == "__main__":
    main()
