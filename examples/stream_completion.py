"""Stream a completion to the terminal, piece by piece, as an app embedding edgellm would.

    python examples/stream_completion.py "ROMEO:" --model shakespeare
"""

import argparse
import sys

import edgellm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = edgellm.load(args.model)
    sys.stdout.write(args.prompt)
    timings = {}
    try:
        for piece in model.stream(args.prompt, max_new_tokens=args.max_new_tokens, seed=args.seed,
                                  temperature=0.8, top_p=0.95, stop_strings=["\n\n\n"], timings=timings):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C stops the completion, not the app
        pass
    sys.stdout.write("\n")
    print(f"[{timings.get('decode_tokens_per_s', 0):.0f} tokens/s]", file=sys.stderr)


if __name__ == "__main__":
    main()
