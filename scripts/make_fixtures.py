#!/usr/bin/env python3
"""Build golden fixtures for the factory engine from Hugging Face transformers.

Run from the repository root with the fixture virtualenv (see scripts/README.md):

    /tmp/fixenv/bin/python scripts/make_fixtures.py

It writes, under models/tests/fixtures/:

  <case>/config.json, generation_config.json, model*.safetensors[, index]
  <case>/expected.json   logits transformers computes for fixed token prompts
  smollm2_golden.json    tokenizer / chat-template / greedy-generation golden for
                         the real default model (~/.cache/factory/SmolLM2-135M-Instruct.Q4_1.gguf),
                         skipped with a message when that file is missing.

Everything is deterministic (fixed seeds, fixed prompts). CI never runs this script:
its outputs are committed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "models" / "tests" / "fixtures"

# Shared small geometry.
VOCAB = 256
HIDDEN = 64
LAYERS = 2
INTERMEDIATE = 128
HEADS = 4
KV_HEADS = 2
MAX_POS = 256

# Prompt lengths: a short one, and a long one whose prefill crosses the 16- and
# 32-token block boundaries and whose 4 decode steps (positions 46..49) cross 48.
PROMPT_LENGTHS = (5, 46)
DECODE_STEPS = 4

# Std of the random re-initialisation.
LINEAR_STD = 0.1
EMBED_STD = 0.1
NORM_STD = 0.1  # norm weights ~ 1 + N(0, NORM_STD)
BIAS_STD = 0.1

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def common(**kw):
    base = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        intermediate_size=INTERMEDIATE,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_POS,
        bos_token_id=1,
        eos_token_id=2,
        hidden_act="silu",
    )
    base.update(kw)
    return base


def cases():
    """(name, config, weights dtype, save kwargs)."""
    return [
        (
            "llama_gqa",
            LlamaConfig(**common(rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)),
            "float32",
            {},
        ),
        (
            "llama2_mha",
            LlamaConfig(
                **common(
                    num_key_value_heads=HEADS,
                    rope_theta=10000.0,
                    rms_norm_eps=1e-6,
                    tie_word_embeddings=False,
                )
            ),
            "float16",
            {},
        ),
        (
            "llama3_scaled",
            LlamaConfig(
                **common(
                    rope_theta=500000.0,
                    rope_scaling={
                        "rope_type": "llama3",
                        "factor": 8.0,
                        "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64,
                    },
                    rms_norm_eps=1e-5,
                    tie_word_embeddings=True,
                )
            ),
            "bfloat16",
            {},
        ),
        (
            "mistral",
            MistralConfig(
                **common(
                    sliding_window=None,
                    rope_theta=10000.0,
                    rms_norm_eps=1e-5,
                    tie_word_embeddings=False,
                )
            ),
            "float32",
            {},
        ),
        (
            "qwen2_bias",
            Qwen2Config(
                **common(
                    rope_theta=1000000.0,
                    rms_norm_eps=1e-6,
                    tie_word_embeddings=True,
                    use_sliding_window=False,
                    sliding_window=None,
                )
            ),
            "float32",
            # ~370 KB of f32 weights -> 3 shards.
            {"max_shard_size": "150KB"},
        ),
        (
            "qwen3_qknorm",
            Qwen3Config(
                **common(
                    head_dim=32,
                    rope_theta=1000000.0,
                    rms_norm_eps=1e-6,
                    tie_word_embeddings=False,
                    use_sliding_window=False,
                    sliding_window=None,
                )
            ),
            "float32",
            {},
        ),
    ]


def round6(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"non-finite logit {x}")
    return float(f"{x:.6g}")


def rows(t: torch.Tensor) -> list[list[float]]:
    return [[round6(v) for v in row] for row in t.detach().to(torch.float32).tolist()]


@torch.no_grad()
def reinit(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights that make every piece of the forward pass visible in the logits."""
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):  # input/post_attention/final/q/k RMSNorm
            val = 1.0 + NORM_STD * torch.randn(p.shape, generator=gen)
        elif name.endswith(".bias"):
            val = BIAS_STD * torch.randn(p.shape, generator=gen)
        elif "embed_tokens" in name:
            val = EMBED_STD * torch.randn(p.shape, generator=gen)
        else:
            val = LINEAR_STD * torch.randn(p.shape, generator=gen)
        p.copy_(val.to(p.dtype))


@torch.no_grad()
def run_case(model, prompt_ids: list[int]) -> dict:
    inp = torch.tensor([prompt_ids], dtype=torch.long)
    out = model(input_ids=inp, use_cache=True)
    prefill = out.logits[0].float()
    past = out.past_key_values
    last = prefill[-1]
    decode_ids, decode_logits = [], []
    for _ in range(DECODE_STEPS):
        tok = int(torch.argmax(last))
        decode_ids.append(tok)
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        last = out.logits[0, -1].float()
        decode_logits.append(last)
    # Cross-check: the step-by-step decode must match one full forward pass.
    full = model(input_ids=torch.tensor([prompt_ids + decode_ids]), use_cache=False).logits[0].float()
    ref = torch.cat([prefill, torch.stack(decode_logits)[:-1]])  # logits for positions 0..n+3-1
    n = len(prompt_ids)
    err = (full[: n + DECODE_STEPS - 1] - ref).abs().max().item()
    err_last = (full[-1] - decode_logits[-1]).abs().max().item()
    assert max(err, err_last) < 1e-4, f"cached decode disagrees with full forward: {err} {err_last}"
    return {
        "prompt_ids": prompt_ids,
        "prefill_logits": rows(prefill),
        "decode_ids": decode_ids,
        "decode_logits": rows(torch.stack(decode_logits)),
    }


def make_synthetic(only: set[str] | None) -> None:
    for idx, (name, config, wdtype, save_kw) in enumerate(cases()):
        if only and name not in only:
            continue
        seed = 1000 + idx
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        config._attn_implementation = "eager"
        model_cls = transformers.AutoModelForCausalLM._model_mapping[type(config)]
        model = model_cls(config).to(torch.float32).eval()
        reinit(model, gen)
        model = model.to(DTYPES[wdtype])

        out_dir = FIXTURES / name
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        model.save_pretrained(out_dir, safe_serialization=True, **save_kw)
        for f in out_dir.iterdir():
            f.chmod(0o644)  # safetensors writes 0600
        # The saved files are what the engine reads; compute the goldens from them.
        del model
        model = AutoModelForCausalLM.from_pretrained(
            out_dir, dtype=torch.float32, attn_implementation="eager"
        ).eval()

        # Prompts: token ids drawn from the whole vocab (fixed per case).
        pgen = torch.Generator().manual_seed(seed + 77)
        prompts = [torch.randint(0, VOCAB, (n,), generator=pgen).tolist() for n in PROMPT_LENGTHS]
        expected = {
            "family": config.model_type,
            "weights_dtype": wdtype,
            "tie_word_embeddings": bool(config.tie_word_embeddings),
            "seed": seed,
            "generator": f"scripts/make_fixtures.py (transformers {transformers.__version__}, torch {torch.__version__.split('+')[0]})",
            "cases": [run_case(model, p) for p in prompts],
        }
        with open(out_dir / "expected.json", "w") as f:
            json.dump(expected, f, separators=(",", ":"))
            f.write("\n")
        top = [c["decode_ids"] for c in expected["cases"]]
        spread = max(max(r) - min(r) for c in expected["cases"] for r in c["prefill_logits"])
        print(f"{name}: {wdtype}, files={sorted(p.name for p in out_dir.iterdir())}, decode_ids={top}, max logit spread={spread:.3f}")


# ---------------------------------------------------------------------------
# SmolLM2 default-model golden
# ---------------------------------------------------------------------------

GGUF_DIR = Path(os.path.expanduser("~/.cache/factory"))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW_TOKENS = 40

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "Hi! My name is Alice."},
        {"role": "assistant", "content": "Hello Alice! How can I help you today?"},
        {"role": "user", "content": "Can you list three primary colors?"},
    ],
    [{"role": "user", "content": "Écris un haïku sur la mer 🌊"}],
]

RAW_STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "   three leading spaces",
    "12345 678",
    "line one\nline two\n\nline four\n",
    "emoji 🌊🙂 and 👩‍💻",
    "Écris un haïku sur la mer, naïve café, Straße, 日本語",
    "def f(x):\n\treturn x + 1\t# tab",
    "<|im_start|>user\nhi<|im_end|>",
]


def topk(logits: torch.Tensor, k: int = 5) -> dict:
    v, i = torch.topk(logits.float(), k)
    return {"ids": i.tolist(), "values": [round6(x) for x in v.tolist()]}


def reference_tokenizer(tok):
    """The HF SmolLM2 tokenizer.json pre-tokenizer (Digits(individual) + ByteLevel), no post-processor,
    built on the vocab/merges transformers extracted from the GGUF. Used only as a cross-check."""
    from tokenizers import Tokenizer, pre_tokenizers

    ref = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return ref


@torch.no_grad()
def make_smollm2_golden() -> None:
    path = GGUF_DIR / GGUF_NAME
    if not path.exists():
        print(f"SKIP smollm2 golden: {path} not found")
        return
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    reader = GGUFReader(str(path))

    def meta(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    gguf_meta = {
        k: meta(k)
        for k in [
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_space_prefix",
        ]
    }
    gguf_template = meta("tokenizer.chat_template")

    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(
        GGUF_DIR, gguf_file=GGUF_NAME, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    gen_eos = model.generation_config.eos_token_id
    ref_tok = reference_tokenizer(tok)

    chats = []
    for messages in CHATS:
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids_template = list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
        ids_encode = tok(rendered, add_special_tokens=False).input_ids
        ids_ref = ref_tok.encode(rendered, add_special_tokens=False).ids
        inp = torch.tensor([ids_template])
        logits = model(input_ids=inp).logits[0, -1]
        out = model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            pad_token_id=gen_eos if isinstance(gen_eos, int) else None,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new_ids = out.sequences[0, len(ids_template):].tolist()
        assert new_ids[0] == int(torch.argmax(logits)), "first generated token != argmax of prefill logits"
        text = tok.decode(new_ids, skip_special_tokens=True)
        chats.append(
            {
                "messages": messages,
                "rendered_prompt": rendered,
                "input_ids": ids_template,
                "input_ids_apply_chat_template_agrees_with_encode": ids_template == ids_encode,
                "input_ids_agree_with_digit_split_reference": ids_template == ids_ref,
                "output_ids": new_ids,
                "output_text": text,
                "output_text_with_special_tokens": tok.decode(new_ids, skip_special_tokens=False),
                "first_position_top5": topk(logits),
                "step_top5": [topk(l[0]) for l in out.logits],
            }
        )
        print(f"--- {messages[-1]['content']!r}\n{text!r}")

    raw = []
    for s in RAW_STRINGS:
        with_sp = tok(s, add_special_tokens=True).input_ids
        without = tok(s, add_special_tokens=False).input_ids
        ref = ref_tok.encode(s, add_special_tokens=False).ids
        raw.append(
            {
                "text": s,
                "ids_no_special_tokens": without,
                "ids_with_special_tokens": with_sp,
                "agrees_with_digit_split_reference": without == ref,
                "decoded": tok.decode(without),
            }
        )

    golden = {
        "model_file": GGUF_NAME,
        "generator": f"scripts/make_fixtures.py (transformers {transformers.__version__}, torch {torch.__version__.split('+')[0]})",
        "notes": [
            "transformers dequantizes the Q4_1/Q8_0 GGUF to float32 and un-permutes Q/K; logits are f32 CPU.",
            "Greedy generation, max_new_tokens=40; output_ids are new tokens only and include the eos "
            "(<|im_end|>, id 2 per generation_config) when generation stopped on it.",
            "transformers' GGUF tokenizer reports bos_token and eos_token as <|im_start|> and adds it in "
            "ids_with_special_tokens, although the GGUF says eos_token_id=2 and add_bos_token=false: treat "
            "ids_with_special_tokens as transformers' behaviour, not the model's. llama.cpp adds nothing.",
            "transformers' GGUF tokenizer uses a plain GPT-2 ByteLevel pre-tokenizer (ignoring tokenizer.ggml.pre="
            "'smollm', which splits digits individually); the *_digit_split_reference flags say whether the ids "
            "equal those of that (HF tokenizer.json) pre-tokenizer.",
        ],
        "gguf_metadata": gguf_meta,
        "chat_template": tok.chat_template,
        "chat_template_equals_gguf": tok.chat_template == gguf_template,
        "tokenizer": {
            "class": type(tok).__name__,
            "bos_token": tok.bos_token,
            "bos_token_id": tok.bos_token_id,
            "eos_token": tok.eos_token,
            "eos_token_id": tok.eos_token_id,
            "unk_token": tok.unk_token,
            "pad_token": tok.pad_token,
            "add_bos_token": getattr(tok, "add_bos_token", None),
            "vocab_size": len(tok),
        },
        "generation_config": {
            "bos_token_id": model.generation_config.bos_token_id,
            "eos_token_id": gen_eos,
            "pad_token_id": model.generation_config.pad_token_id,
        },
        "chats": chats,
        "raw_tokenization": raw,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "smollm2_golden.json", "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("smollm2_golden.json written")


def print_sizes() -> None:
    total = 0
    for p in sorted(FIXTURES.rglob("*")):
        if p.is_file():
            sz = p.stat().st_size
            total += sz
            print(f"{sz:>10}  {p.relative_to(REPO_ROOT)}")
    print(f"{total:>10}  total ({total / 1e6:.2f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="synthetic case names to rebuild (default: all)")
    ap.add_argument("--skip-smollm2", action="store_true", help="do not build smollm2_golden.json")
    ap.add_argument("--skip-synthetic", action="store_true", help="only build smollm2_golden.json")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    if not args.skip_synthetic:
        make_synthetic(set(args.only) if args.only else None)
    if not args.skip_smollm2:
        make_smollm2_golden()
    print_sizes()


if __name__ == "__main__":
    sys.exit(main())
