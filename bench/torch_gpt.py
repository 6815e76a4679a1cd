"""The PyTorch baseline of bench/gpu_train.py: a plain GPT of edgellm's shape, trained as nanoGPT does.

Same architecture as training/model.py with learned positions: pre-LayerNorm blocks without
biases, tanh GELU, tied input/output embedding, GPT-2 initialisation. Trained with
`torch.compile`, bfloat16 autocast, `F.scaled_dot_product_attention` (flash attention on the
GPU), fused AdamW with decay on matrices only and clipping to norm 1: nanoGPT's recipe.
Batches are random windows of the same token ids, cut on the host and copied from pinned memory.

    speed = train_speed(dict(layers=6, heads=6, width=384, context=256, vocab=257, batch=64),
                        ids, steps=600, warmup=50)
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width, bias=False), nn.LayerNorm(width, bias=False)
        self.qkv, self.proj = nn.Linear(width, 3 * width, bias=False), nn.Linear(width, width, bias=False)
        self.fc, self.fc_proj = nn.Linear(width, 4 * width, bias=False), nn.Linear(4 * width, width, bias=False)
        for residual in (self.proj, self.fc_proj):  # scaled down with depth, as GPT-2
            residual.scale = 0.02 / math.sqrt(2 * layers)

    def forward(self, x):
        batch, seq, width = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, seq, width))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab: int, context: int, layers: int, heads: int, width: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=False)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=getattr(module, "scale", 0.02))
        nn.init.normal_(self.wpe.weight, std=0.01)

    def forward(self, ids, targets):
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def train_speed(shape: dict, ids: np.ndarray, steps: int, warmup: int, lr: float = 1e-3) -> dict:
    """Train `warmup` steps (compilation), then time `steps` more. Returns tokens/s and more."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    model = GPT(shape["vocab"], shape["context"], shape["layers"], shape["heads"], shape["width"]).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    step_fn = torch.compile(model) if cuda else model  # Inductor on CPU needs a C++ toolchain
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cuda)
    rng = np.random.default_rng(0)
    batch, context = shape["batch"], shape["context"]

    def get_batch():
        starts = rng.integers(0, len(ids) - context, size=batch)
        windows = torch.from_numpy(np.stack([ids[s : s + context + 1] for s in starts]).astype(np.int64))
        if cuda:
            windows = windows.pin_memory().to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]

    def step():
        x, y = get_batch()
        with autocast:
            loss = step_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    started = time.perf_counter()
    loss = step()  # compiles
    float(loss)  # waits for the device
    first_step = time.perf_counter() - started
    for _ in range(warmup - 1):
        loss = step()
    float(loss)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    final_loss = float(loss)
    seconds = time.perf_counter() - t0
    return {"tokens_per_sec": steps * batch * context / seconds, "timed_steps": steps, "timed_seconds": seconds,
            "first_step_seconds": first_step, "loss": final_loss, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "parameters": sum(p.numel() for p in model.parameters()),
            "position_parameters": model.wpe.weight.numel(), "torch": torch.__version__}
