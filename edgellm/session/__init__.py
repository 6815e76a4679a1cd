"""The onnxruntime session and its KV-cache runs: `session` opens model.onnx (threads, providers,
huge pages in `huge_pages`), `runs` binds one generation's cache (a preallocated in-place cache,
or one concatenated each step), `slots` the server's rows that join and leave a shared cache, and
`batching` left-pads several prompts and fits a prompt to the context.

This room knows tensors and token ids, not text or settings beyond the context policy.
"""
