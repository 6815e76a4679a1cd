"""Generation: how the next token is chosen and when a sequence stops. `decoding` runs the loop
over a session's runs, `search` (greedy, sampling and beam search rows), `sampling` (the logits
processors, in order), `stopping` (stop ids and strings), `constraints` (JSON schema and regex
grammars), `prompt_lookup` (drafts verified in one run), `streaming` (tokens and text as they
come) and `scoring` (log-probabilities of given text).

The public entry point is `edgellm.load` (generator.py), which puts the rooms together.
"""
