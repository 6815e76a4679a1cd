"""Start-up and memory: `import edgellm`, loading a model, first token, resident memory.

Each figure comes from fresh Python processes (median of --runs), next to a baseline measured
in the same run: importing numpy and onnxruntime (what any onnxruntime app pays) for import
time, and onnxruntime-genai loading the same folder and generating the same tokens for resident
memory.

    python bench/runtime_startup.py --model shakespeare
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPORT = """
import sys, time
started = time.perf_counter()
{statement}
took = time.perf_counter() - started
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'numpy', 'onnxruntime', 'tensorflow', 'keras'}})
print(json.dumps({{"seconds": took, "heavy": heavy}}))
"""

EDGELLM_RUN = """
import resource, time
started = time.perf_counter()
import edgellm
model = edgellm.load({folder!r})
loaded = time.perf_counter()
first = next(iter(model.stream("ROMEO:", max_new_tokens={tokens}, temperature=0.0, stop_token_ids=())))
first_token = time.perf_counter()
model.generate("ROMEO:", max_new_tokens={tokens}, temperature=0.0, stop_token_ids=())
print(json.dumps({{"load_s": loaded - started, "first_token_s": first_token - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

GENAI_RUN = """
import resource
import onnxruntime_genai as og
model = og.Model({folder!r})
params = og.GeneratorParams(model)
params.set_search_options(max_length={tokens} + 4, do_sample=False)
generator = og.Generator(model, params)
generator.append_tokens({ids})
while not generator.is_done():
    generator.generate_next_token()
print(json.dumps({{"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def python(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    from edgellm.folder import model_folder
    from edgellm.tokenizer import Tokenizer

    folder = str(model_folder.resolve(args.model).resolve())
    ours = [python(IMPORT.format(statement="import edgellm")) for _ in range(args.runs)]
    numpy_ort = [python(IMPORT.format(statement="import numpy, onnxruntime")) for _ in range(args.runs)]
    runs = [python(EDGELLM_RUN.format(folder=folder, tokens=args.tokens)) for _ in range(args.runs)]
    ids = Tokenizer.load(f"{folder}/tokenizer.json").encode("ROMEO:")
    try:
        genai = [python(GENAI_RUN.format(folder=folder, tokens=args.tokens, ids=ids)) for _ in range(args.runs)]
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        genai = None

    print(f"model {args.model}, {args.runs} fresh processes per figure (medians)")
    ours_s, base_s = median(ours, "seconds"), median(numpy_ort, "seconds")
    print(f"import edgellm:          {1000 * ours_s:7.1f} ms "
          f"(modules loaded: {ours[0]['heavy'] or 'none of numpy, onnxruntime, tensorflow, keras'})")
    print(f"  import numpy, onnxruntime: {1000 * base_s:.1f} ms; ratio {ours_s / base_s:.3f}x")
    print(f"load the model:          {1000 * median(runs, 'load_s'):7.1f} ms (from the start of import)")
    print(f"first streamed token:    {1000 * median(runs, 'first_token_s'):7.1f} ms (from the start of import)")
    print(f"resident memory (peak):  {median(runs, 'rss_mb'):7.1f} MB after loading and generating "
          f"{args.tokens} tokens")
    if genai:
        print(f"  onnxruntime-genai, same folder and tokens: {median(genai, 'rss_mb'):.1f} MB; "
              f"ratio {median(runs, 'rss_mb') / median(genai, 'rss_mb'):.2f}x")


if __name__ == "__main__":
    main()
