#!/usr/bin/env python3
"""Baseline for the offline-throughput benchmark: Hugging Face transformers'
own continuous batching (`model.generate_batch`, paged attention) on the same
model shape with random weights, N random prompts of P tokens, G greedy output
tokens each, no EOS stop.

    python3 benches/gpu/hf_generate_batch.py [--config benches/data/llama-3.1-8b-config.json]
        [--requests 1000] [--prompt-len 512] [--output-len 256] [--attn paged|sdpa]
        [--json out.json] [--tiny]

`--tiny` is a CPU smoke run (2 layers, hidden 64, 20 requests of 64 + 32
tokens). Prints the torch/transformers versions first and fails with a clear
message when this transformers has no `generate_batch` (continuous batching
arrived in transformers 4.56 / 5.x).

Reported: output tokens/s over the generation window (first request created
to last request finished, as transformers records them: model load,
manager start-up and CUDA-graph warm-up excluded) and over the whole
`generate_batch` call (included).
"""

import argparse
import json
import os
import platform
import random
import sys
import time

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "data", "llama-3.1-8b-config.json"
)


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"hf_generate_batch: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="a Hugging Face config.json")
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--output-len", type=int, default=None)
    p.add_argument("--attn", default="paged|sdpa",
                   help="attn_implementation (paged|sdpa, paged|flash_attention_2, sdpa_paged, ...)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="ContinuousBatchingConfig.max_batch_tokens (default: transformers decides)")
    p.add_argument("--num-blocks", type=int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: 2 layers, hidden 64")
    a = p.parse_args()
    defaults = (20, 64, 32) if a.tiny else (1000, 512, 256)
    a.requests = defaults[0] if a.requests is None else a.requests
    a.prompt_len = defaults[1] if a.prompt_len is None else a.prompt_len
    a.output_len = defaults[2] if a.output_len is None else a.output_len
    if a.tiny:
        # transformers sizes the cache from free GPU memory; on the CPU it must be told.
        a.num_blocks = 64 if a.num_blocks is None else a.num_blocks
        a.max_batch_tokens = 256 if a.max_batch_tokens is None else a.max_batch_tokens
    if min(a.requests, a.prompt_len, a.output_len) < 1:
        fail("--requests, --prompt-len and --output-len must be at least 1")
    return a


def main():
    a = parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        fail(f"torch and transformers are needed: {e}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}", flush=True)
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    if not hasattr(AutoModelForCausalLM, "from_config"):
        fail("this transformers has no AutoModelForCausalLM.from_config")
    try:
        from transformers.generation import ContinuousBatchingConfig
    except ImportError:
        ContinuousBatchingConfig = None  # older 4.5x: the settings live on GenerationConfig

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but torch sees no GPU")
    if device == "cpu" and not a.tiny:
        fail("no GPU: only --tiny runs on the CPU")
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
              f"{props.multi_processor_count} SMs", flush=True)
    else:
        print("device: cpu", flush=True)

    try:
        with open(a.config) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{a.config}: {e}")
    model_type = raw.pop("model_type", None)
    if model_type is None:
        fail(f"{a.config}: no model_type")
    config = AutoConfig.for_model(model_type, **raw)
    if a.tiny:
        config.num_hidden_layers = 2
        config.hidden_size = 64
        config.intermediate_size = 128
        config.num_attention_heads = 4
        config.num_key_value_heads = 2
        config.head_dim = 16
        config.vocab_size = 1000
    # No EOS: every request generates exactly --output-len tokens.
    config.eos_token_id = None
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    # Initialised in place on the device (an 8B model built on the CPU first
    # would take minutes); weights are transformers' default random init.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=a.attn)
    model.eval()
    if device == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{params / 1e9:.3f} B parameters, {dtype}, attn {model.config._attn_implementation}; "
          f"initialised in {load_s:.1f} s", flush=True)

    if not hasattr(model, "generate_batch"):
        fail(f"transformers {transformers.__version__} has no generate_batch "
             "(continuous batching): needs transformers >= 4.56")

    if device == "cpu":
        # transformers measures the room for its KV cache on the GPU only (0
        # bytes on the CPU); the smoke run grants it 1 GiB.
        try:
            from transformers.generation.continuous_batching.cache import PagedAttentionMemoryHandler
            PagedAttentionMemoryHandler.get_available_memory = lambda self: 1 << 30
        except (ImportError, AttributeError) as e:
            print(f"note: could not set the CPU cache budget ({e})", flush=True)

    rng = random.Random(a.seed)
    inputs = [[rng.randrange(config.vocab_size) for _ in range(a.prompt_len)] for _ in range(a.requests)]
    gen_kwargs = dict(do_sample=False, max_new_tokens=a.output_len, eos_token_id=-1, pad_token_id=0)
    cb_kwargs = {k: v for k, v in (("max_batch_tokens", a.max_batch_tokens),
                                   ("num_blocks", a.num_blocks),
                                   ("block_size", a.block_size)) if v is not None}
    call_kwargs = {}
    if ContinuousBatchingConfig is not None:
        call_kwargs["continuous_batching_config"] = ContinuousBatchingConfig(**cb_kwargs)
        gen_config = GenerationConfig(**gen_kwargs)
    else:
        gen_config = GenerationConfig(**gen_kwargs, **cb_kwargs)
    print(f"workload: {a.requests} requests x {a.prompt_len} random prompt tokens -> "
          f"{a.output_len} greedy output tokens, no EOS; continuous batching {cb_kwargs or 'defaults'}",
          flush=True)

    t0 = time.perf_counter()
    # No inference_mode here: the manager's thread updates tensors made on
    # this one, which inference tensors forbid.
    results = model.generate_batch(inputs=inputs, generation_config=gen_config,
                                   progress_bar=False, **call_kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    call_s = time.perf_counter() - t0

    outs = list(results.values())
    errors = [r.error for r in outs if getattr(r, "error", None)]
    lengths = [len(r.generated_tokens) for r in outs]
    output_tokens = sum(lengths)
    # The generation window from transformers' own per-request clocks
    # (perf_counter): first creation to last finish.
    starts = [r.created_time for r in outs if getattr(r, "created_time", None)]
    ends = [r.lifespan[1] for r in outs if getattr(r, "lifespan", (-1, -1))[1] > 0]
    gen_s = (max(ends) - min(starts)) if starts and ends else None

    ok = len(outs) == a.requests and not errors and all(n == a.output_len for n in lengths)
    print(f"finished {len(outs)} of {a.requests} requests, {output_tokens} output tokens "
          f"(want {a.requests * a.output_len}), {len(errors)} errors", flush=True)
    if errors:
        print(f"first error: {errors[0]}", flush=True)
    print(f"generate_batch call: {call_s:.2f} s -> {output_tokens / call_s:.1f} output tok/s "
          "(manager start-up and warm-up included)", flush=True)
    if gen_s:
        print(f"generation window: {gen_s:.2f} s -> {output_tokens / gen_s:.1f} output tok/s", flush=True)

    report = {
        "bench": "hf_generate_batch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "config": os.path.abspath(a.config),
        "tiny": a.tiny,
        "attn_implementation": model.config._attn_implementation,
        "dtype": str(dtype),
        "parameters": params,
        "requests": a.requests,
        "prompt_len": a.prompt_len,
        "output_len": a.output_len,
        "continuous_batching": cb_kwargs,
        "model_init_seconds": load_s,
        "finished": len(outs),
        "errors": len(errors),
        "output_tokens": output_tokens,
        "call_seconds": call_s,
        "call_output_tok_per_s": output_tokens / call_s,
        "generation_seconds": gen_s,
        "generation_output_tok_per_s": (output_tokens / gen_s) if gen_s else None,
        "all_complete": ok,
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    if not ok:
        fail("not every request generated its full output (see above)")


if __name__ == "__main__":
    main()
