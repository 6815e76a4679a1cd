#!/usr/bin/env bash
# models/summarize from data/debian-descriptions: a task model trained from scratch on the
# prompt/completion rows (a 4,096-id tokenizer learned from them), each description cut to its
# start (--too-long right) so that it fits a context of 128 tokens with its synopsis, the prompt
# tokens weighted 0.5 in the loss; then export, int8 where ROUGE-L holds, and the test figures.
# Run from the repository root (about 95 minutes on 2 CPU cores; --time-budget plans the steps):
#     bash data/debian-descriptions/recipe.sh
# (data/debian-descriptions/prepare.py made train.jsonl.gz and test.jsonl.gz from the corpus.)
set -euo pipefail
DATA=data/debian-descriptions

edgellm train --examples "$DATA/train.jsonl.gz" --out runs/summarize \
    --vocab-size 4096 --layers 4 --heads 4 --width 256 --context 128 --batch-size 32 \
    --steps 20000 --lr 1e-3 --warmup 200 --prompt-loss-weight 0.5 --too-long right \
    --val-fraction 0.02 --eval-interval 500 --seed 1337 --time-budget 5400
edgellm export runs/summarize runs/summarize-float32
edgellm quantize runs/summarize-float32 models/summarize --task summarization --eval-file "$DATA/test.jsonl.gz"
edgellm eval --task summarization "$DATA/test.jsonl.gz" -m models/summarize --record
edgellm eval --task summarization "$DATA/test.jsonl.gz" -m models/summarize --num-beams 4 --record
