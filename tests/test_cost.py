"""cost.py: the one timing loop (round-robin, warm-up untimed) and the FLOP counter's attention."""
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from imagefolder import cost


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_interleaved_times_each_call_after_the_warm_up():
    calls = []
    times = cost.interleaved({"slow": lambda: (calls.append("s"), time.sleep(0.004)),
                              "fast": lambda: calls.append("f")}, warmup=1, repeats=5)
    assert calls == ["s", "f"] * 6 and [len(t) for t in times.values()] == [5, 5]
    slow = cost.spread(times["slow"])
    assert 0.004 <= slow["p10"] <= slow["median"] <= slow["p90"] < 0.2
    assert max(times["fast"]) < 0.004
    assert cost.spread([1.0, 2.0, 3.0, 4.0, 5.0]) == {"median": 3.0, "p10": 1.4, "p90": 4.6}
    assert cost.device_name("cpu")


def test_flop_counter_counts_cpu_attention():
    b, h, s, d = 2, 4, 16, 8
    q, k, v = (randn((b, h, s, d), i) for i in range(3))
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0  # the torch fact count_flops works around

    def explicit():
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), -1) @ v

    matmuls = 2 * (2 * b * h * s * s * d)  # QKᵀ and AV, 2 FLOPs per multiply-add
    assert cost.count_flops(explicit) == matmuls
    assert cost.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == matmuls
    assert cost.count_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) == matmuls
    block_causal = torch.ones(s, s, dtype=torch.bool).tril()
    assert cost.count_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=block_causal)) == matmuls
    one_query = q[:, :, :1]  # a KV-cached step: 1 query against s keys
    assert cost.count_flops(lambda: F.scaled_dot_product_attention(one_query, k, v)) == 2 * (2 * b * h * s * d)
    lin = nn.Linear(8, 5)
    assert cost.count_flops(lambda: lin(torch.zeros(3, 8))) == 2 * 3 * 8 * 5
