"""Memory pre-check: will a candidate's server start at all on this machine? (Pure arithmetic.)

vLLM refuses to start when its memory budget cannot hold the weights plus the KV cache of one
sequence of `max-model-len` tokens ("... KV cache is needed, which is larger than the available
KV cache memory"). Both are known from the model's config before any start:

    weights   = parameters x bytes per weight (dtype, or the quantization's bits)
    KV / token = 2 (K and V) x layers x KV heads x head size x bytes per KV element

and the budget from the target: `gpu-memory-utilization` (vLLM's default 0.9) x the GPU's memory
on a GPU (per GPU: tensor parallelism splits both), and on the CPU engine the same fraction of
the NUMA node's memory, or `VLLM_CPU_KVCACHE_SPACE` GiB for the KV cache when it is set.
A candidate that leaves `max-model-len` unset gets vLLM's default, the model's full context
(`max_position_embeddings`): that one sequence is what must fit.

The estimate is a lower bound of what the server needs (activations, CUDA graphs and the
runtime come on top), so a candidate refused here could never have started; one that passes
may still fail at start-up, and is measured as usual.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 2**30
DEFAULT_GPU_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2,
               "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "int8": 1}
# bits per weight of the linear layers under a quantization method (embeddings stay 16-bit)
QUANT_BITS = {"fp8": 8, "fbgemm_fp8": 8, "modelopt": 8, "compressed-tensors": 8,
              "bitsandbytes": 4, "awq": 4, "awq_marlin": 4, "gptq": 4, "gptq_marlin": 4,
              "marlin": 4, "gguf": 4}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, from a Hugging Face `config.json`."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    dtype: str  # the checkpoint's torch_dtype
    experts: int = 0  # MoE: routed experts per layer
    expert_intermediate: int = 0
    quant_bits: int | None = None  # a quantized checkpoint's bits per linear weight

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        c = cfg.get("text_config", cfg)
        heads = int(c["num_attention_heads"])
        hidden = int(c["hidden_size"])
        q = cfg.get("quantization_config") or c.get("quantization_config") or {}
        bits = q.get("bits") or q.get("weight_bits") or QUANT_BITS.get(
            str(q.get("quant_method", "")).lower())
        return cls(
            layers=int(c["num_hidden_layers"]), hidden=hidden, heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or hidden // heads),
            intermediate=int(c.get("intermediate_size") or 4 * hidden),
            vocab=int(c["vocab_size"]), tied=bool(c.get("tie_word_embeddings", False)),
            dtype=str(c.get("torch_dtype") or c.get("dtype") or "bfloat16"),
            experts=int(c.get("num_experts") or c.get("num_local_experts") or 0),
            expert_intermediate=int(c.get("moe_intermediate_size") or 0),
            quant_bits=int(bits) if bits else None)

    def linear_params(self) -> int:
        """Parameters of the attention and MLP projections (what quantization shrinks)."""
        attn = self.hidden * self.heads * self.head_dim * 2 \
            + self.hidden * self.kv_heads * self.head_dim * 2
        if self.experts:
            mlp = self.experts * 3 * self.hidden * (self.expert_intermediate
                                                    or self.intermediate)
        else:
            mlp = 3 * self.hidden * self.intermediate  # gated: gate, up, down
        return self.layers * (attn + mlp)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def params(self) -> int:
        return self.linear_params() + self.embedding_params()

    def weight_bytes(self, dtype: str | None, quantization: str | None) -> int:
        """Bytes of weights under a candidate's dtype and quantization."""
        elem = dtype_bytes(dtype, self.dtype)
        bits = QUANT_BITS.get(quantization.lower()) if quantization else self.quant_bits
        linear = self.linear_params() * (bits / 8 if bits else elem)
        return int(linear + self.embedding_params() * elem)

    def kv_bytes_per_token(self, dtype: str | None, kv_cache_dtype: str | None) -> int:
        elem = (DTYPE_BYTES.get(kv_cache_dtype.lower(), 2)
                if kv_cache_dtype and kv_cache_dtype != "auto" else dtype_bytes(dtype,
                                                                                 self.dtype))
        return 2 * self.layers * self.kv_heads * self.head_dim * elem


def dtype_bytes(dtype: str | None, checkpoint: str) -> int:
    d = checkpoint if dtype in (None, "auto") else str(dtype)
    return DTYPE_BYTES.get(d.lower(), 2)


def read_shape(config_json: Path | None) -> ModelShape | None:
    """The shape from a config file; None when it cannot be read or is not a decoder LM."""
    if config_json is None:
        return None
    try:
        return ModelShape.from_config(json.loads(config_json.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Target:
    """The memory a server may use: per GPU on a GPU host, the NUMA node's on the CPU."""

    gpu_bytes: int | None  # one GPU's total memory; None: the CPU engine
    node_bytes: int  # CPU engine: the NUMA node's memory


@dataclass(frozen=True)
class Need:
    weights: int
    kv: int  # one max-model-len sequence
    budget: int
    kv_budget: int | None  # an explicit KV budget (VLLM_CPU_KVCACHE_SPACE)
    what: str  # how the budget was reached
    # the model's own context (max_position_embeddings), max-model-len being unset: None
    # when a max-model-len was given
    full_context: int | None = None

    @property
    def fits(self) -> bool:
        if self.kv_budget is not None:
            return self.kv <= self.kv_budget and self.weights <= self.budget
        return self.weights + self.kv <= self.budget

    def why_not(self) -> str:
        if self.kv_budget is not None and self.kv > self.kv_budget:
            why = (f"one sequence of max-model-len needs {self.kv / GiB:.2f} GiB of KV cache, "
                   f"more than VLLM_CPU_KVCACHE_SPACE's {self.kv_budget / GiB:.2f} GiB")
        else:
            why = (f"weights {self.weights / GiB:.2f} GiB + KV cache for one max-model-len "
                   f"sequence {self.kv / GiB:.2f} GiB exceed {self.what} = "
                   f"{self.budget / GiB:.2f} GiB")
        if self.full_context is not None:
            why += (f" (max-model-len unset: the model's full context, {self.full_context} "
                    "tokens; fix max-model-len in the space to cap it)")
        return why


def need(shape: ModelShape, args: dict[str, Any], env: dict[str, str], target: Target,
         default_context: int | None) -> Need | None:
    """A candidate's least memory need against its budget; None when the context is unknown."""
    full = "max-model-len" not in args or args["max-model-len"] is None
    context = default_context if full else args["max-model-len"]
    if not isinstance(context, int) or isinstance(context, bool) or context <= 0:
        return None  # unknown, or vLLM's auto-fit (-1): it chooses what fits
    tp = int(args.get("tensor-parallel-size", 1) or 1)
    weights = shape.weight_bytes(args.get("dtype"), args.get("quantization"))
    kv = shape.kv_bytes_per_token(args.get("dtype"), args.get("kv-cache-dtype")) * context
    util = float(args.get("gpu-memory-utilization") or (
        DEFAULT_GPU_UTILIZATION if target.gpu_bytes else 0.92))
    if target.gpu_bytes is not None:
        return Need(math.ceil(weights / tp), math.ceil(kv / tp),
                    int(util * target.gpu_bytes), None,
                    f"gpu-memory-utilization {util:g} x {target.gpu_bytes / GiB:.1f} GiB",
                    context if full else None)
    space = env.get("VLLM_CPU_KVCACHE_SPACE")
    kv_budget = int(float(space) * GiB) if space not in (None, "", "0") else None
    return Need(weights, kv, int(util * target.node_bytes), kv_budget,
                f"gpu-memory-utilization {util:g} x the NUMA node's "
                f"{target.node_bytes / GiB:.1f} GiB", context if full else None)


def numa_node_bytes(default: int) -> int:
    """The first NUMA node's memory (what vLLM's CPU engine budgets from), or `default`."""
    try:
        text = Path("/sys/devices/system/node/node0/meminfo").read_text()
    except OSError:
        return default
    for line in text.splitlines():
        parts = line.split()
        if "MemTotal:" in parts:
            return int(parts[parts.index("MemTotal:") + 1]) * 1024
    return default


__all__ = ["ModelShape", "Need", "Target", "need", "numa_node_bytes", "read_shape"]
