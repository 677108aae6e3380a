"""What a computation costs: wall time, FLOPs, and the device that ran it (used by `bench`).

Wall times come from one loop, `interleaved`: the variants being compared are called round-robin
(A B A B …) in one process, so a drift of a shared machine lands on all of them alike.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def device_name(device: str | torch.device) -> str:
    """Human name of a device: the GPU model, or the CPU model (with its x86 family and model numbers, which
    tell CPU generations apart where the name does not, e.g. "AMD EPYC") and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu, numbers = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as fh:
            fields = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = fields.get("model name", cpu)
        if "cpu family" in fields and "model" in fields:
            numbers = f"family {fields['cpu family']}, model {fields['model']}; "
    except OSError:
        pass
    return f"{cpu} ({numbers}{torch.get_num_threads()} threads)"


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Wall times (s) of each of `fns`, timed round-robin: `warmup` untimed rounds, then `repeats` rounds
    that call every function once, in order (on CUDA synchronised around each call)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be ≥ 1 and warmup={warmup} ≥ 0")
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def spread(values: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile of timings (or ratios)."""
    p10, p50, p90 = np.percentile(values, [10, 50, 90]).tolist()
    return {"median": p50, "p10": p10, "p90": p90}


FLOPS_NOTE = ("FLOPs from torch.utils.flop_counter (2 per multiply-add); attention counted as its two "
              "matmuls QKᵀ and AV at full size (no causal or mask discount, softmax not counted), including "
              "CPU scaled_dot_product_attention, which FlopCounterMode alone counts as 0.")


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs of running `fn()` once, attention included on every device (see FLOPS_NOTE)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())
