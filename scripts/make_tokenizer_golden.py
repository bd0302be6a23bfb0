#!/usr/bin/env python3
"""Golden data for the tokenizer and chat-template tests (models/tests/tokenizer_golden.rs).

Writes:
  models/tests/fixtures/tokenizer_golden.json   ids / decodes / rendered templates from transformers
  models/tests/fixtures/tokenizer_spm_tiny.gguf a tiny SentencePiece (BPE, byte fallback) vocabulary
                                                trained here, as a vocab-only `llama` GGUF
  models/tests/fixtures/tokenizer_spm_tiny_hf/  the same tokenizer as tokenizer.json + tokenizer_config.json

What is compared against what:
  * SmolLM2-135M-Instruct (the default model's GGUF, a `gpt2`/`smollm` byte-level BPE vocab):
    transformers' own GGUF loading (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`).
  * The tiny SentencePiece GGUF: transformers' GGUF loading of that file, and sentencepiece itself
    on the .model it was written from (both recorded).
  * Chat templates: transformers' `apply_chat_template` (SmolLM2's template from the GGUF) and its
    `render_jinja_template` (the jinja2 environment apply_chat_template uses) for extra templates
    exercising tools, tojson, Python string methods, namespace, loop controls, raise_exception and
    {% generation %}.

Environment (outside the repo), tested with transformers 4.57.6, tokenizers 0.22.2, gguf 0.19.0,
sentencepiece 0.2.3, jinja2 3.1:
    python3 -m venv /tmp/tokenv
    /tmp/tokenv/bin/pip install "transformers==4.57.6" tokenizers gguf sentencepiece protobuf numpy torch
(transformers 4.57's GGUF loader imports torch even for tokenizers; transformers 5.x needs torch too.)

Run from anywhere:
    /tmp/tokenv/bin/python scripts/make_tokenizer_golden.py [--gguf PATH_TO_SmolLM2-135M-Instruct.Q4_1.gguf]
"""

import argparse
import importlib.metadata
import inspect
import io
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "models" / "tests" / "fixtures"
GOLDEN = FIXTURES / "tokenizer_golden.json"
SPM_GGUF = FIXTURES / "tokenizer_spm_tiny.gguf"
SPM_HF_DIR = FIXTURES / "tokenizer_spm_tiny_hf"
DEFAULT_GGUF = Path.home() / ".cache" / "factory" / "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello world ",
    "  multiple   spaces    here  ",
    "   leading spaces",
    "trailing spaces   ",
    "",
    " ",
    "\n\n\n",
    "line one\nline two\n\n\tindented\ttab\r\nwindows",
    "The year 2024 had 366 days; pi ~ 3.14159265358979",
    "1234567890 9876543210 12,345.67 $1,000,000 -42 007",
    "Mixed123numbers456and789letters",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    'fn main() { println!("{}", 0x1F_u8 as char); } // ok?',
    '{"key": [1, 2.5, null], "nested": {"a": "b"}}',
    "I'm sure it's what they'd've wanted, isn't it? You'll see. DON'T",
    "URL: https://example.com/path?query=1&x=y#frag",
    "I love \U0001f999 and \U0001f917! \U0001f469\u200d\U0001f4bb",
    "你好，世界！今日はいい天気ですね。안녕하세요",
    "Crème brûlée, naïve façade, Ångström, Straße, Ελληνικά, русский",
    "Ünïcödé ⅷ ① ½ ﬁ e\u0301",
    "x² + y³ = z⁴; Ⅻ; ٣٤٥ and १२३",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text with <|im_end|> inside and <|endoftext|>",
    "<|im_start|><|im_start|>",
    "<|im_start partial <|im_end",
    "a" * 70,
]

SMOLLM_CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And times 3?"},
    ],
    [
        {"role": "system", "content": "Réponds en français.\nSois bref."},
        {"role": "user", "content": "  Bonjour\t!  "},
        {"role": "assistant", "content": "Salut ! \U0001f44b"},
        {"role": "user", "content": "Ça va ?"},
    ],
]

# Templates rendered with transformers' jinja2 environment. Sources are written for these tests
# (modelled on real templates); both sides render the same source.
FEATURES_TEMPLATE = r"""{{- bos_token -}}
{%- set ns = namespace(n=0, sys='') -%}
{%- if messages[0]['role'] == 'system' %}{% set ns.sys = messages[0]['content'].strip() %}{% set msgs = messages[1:] %}{% else %}{% set msgs = messages %}{% endif -%}
[SYS={{ ns.sys | upper }}|{{ ns.sys.startswith('Be') }}|{{ ns.sys.endswith('.') }}|{{ ns.sys.split(' ') | length }}]
{% for m in msgs %}
  {% if m.role == 'skip' %}{% continue %}{% endif %}
  {% if m.role == 'stop' %}{% break %}{% endif %}
  {% set ns.n = ns.n + 1 %}
  {{ loop.index0 }}:{{ m['role'] }}> {{ m.content | trim }}
  {% if m.tool_calls is defined %}
    {% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}
{% endfor %}
  {% endif %}
{% endfor %}
N={{ ns.n }} {{ eos_token }}
{% if tools is not none %}TOOLS {{ tools | length }}: {{ tools | tojson }}
{{ tools[0] | tojson(indent=2) }}
{% for k, v in tools[0].items() %}{{ k }}={{ v | tojson(separators=(',', ':'), sort_keys=true) }};{% endfor %}
{% else %}no tools{% endif %}
{{ 'é"\\<&>' | tojson }} {{ 'é' | tojson(ensure_ascii=true) }} {{ [1, 2.5, none, true, 1e-05] | tojson }}
{% if add_generation_prompt %}<assistant>{% endif %}"""

QWEN_LIKE_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3_LIKE_TEMPLATE = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

MISTRAL_LIKE_TEMPLATE = r"""{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"""

GENERATION_TEMPLATE = r"""{% for message in messages %}
{% if message.role == 'assistant' %}
{% generation %}
A: {{ message.content }}
{% endgeneration %}
{% else %}
U: {{ message.content }}
{% endif %}
{% endfor %}
{% if add_generation_prompt %}A:{% endif %}"""

WEATHER_TOOL = {
    "function": {
        "description": "Get the weather for a city.",
        "name": "get_weather",
        "parameters": {
            "properties": {
                "city": {"description": "City name, e.g. Paris", "type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
            },
            "required": ["city"],
            "type": "object",
        },
    },
    "type": "function",
}

TOOL_CHAT = [
    {"role": "system", "content": "  Be concise.  "},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "content": "",
        "role": "assistant",
        "tool_calls": [
            {"function": {"arguments": {"city": "Paris", "unit": "celsius"}, "name": "get_weather"}, "type": "function"}
        ],
    },
    {"role": "tool", "content": '{"temp": 21.5}'},
    {"role": "tool", "content": '{"sky": "clear"}'},
    {"role": "assistant", "content": "21.5 °C and clear."},
    {"role": "skip", "content": "invisible"},
    {"role": "user", "content": "Thanks!  "},
    {"role": "stop", "content": "end"},
    {"role": "user", "content": "never shown"},
]


def sort_keys_deep(v):
    """serde_json without `preserve_order` sorts object keys; give Python the same order."""
    if isinstance(v, dict):
        return {k: sort_keys_deep(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [sort_keys_deep(x) for x in v]
    return v


def template_cases():
    from transformers.utils.chat_template_utils import render_jinja_template

    simple = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "Bye"}]
    specs = [
        ("features", FEATURES_TEMPLATE, "<s>", "</s>", [
            (TOOL_CHAT, [WEATHER_TOOL], None, True),
            (TOOL_CHAT, None, None, False),
            (simple, None, None, True),
        ]),
        ("qwen_like", QWEN_LIKE_TEMPLATE, None, "<|im_end|>", [
            (TOOL_CHAT[:6], [WEATHER_TOOL], None, True),
            (TOOL_CHAT[:2], None, None, True),
            (simple, None, None, False),
        ]),
        ("llama3_like", LLAMA3_LIKE_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", [
            (TOOL_CHAT[:2], None, {"date_string": "01 Jan 2025"}, True),
            (simple, None, {"date_string": "01 Jan 2025"}, False),
        ]),
        ("mistral_like", MISTRAL_LIKE_TEMPLATE, "<s>", "</s>", [
            (simple, None, None, False),
            ([{"role": "assistant", "content": "first"}], None, None, False),
            ([{"role": "system", "content": "sys"}], None, None, False),
        ]),
        ("generation_tags", GENERATION_TEMPLATE, None, None, [
            (simple, None, None, True),
        ]),
    ]
    out = []
    for name, source, bos, eos, cases in specs:
        rendered_cases = []
        for messages, tools, extra, agp in cases:
            messages = sort_keys_deep(messages)
            tools = sort_keys_deep(tools) if tools is not None else None
            kwargs = dict(extra or {})
            if bos is not None:
                kwargs["bos_token"] = bos
            if eos is not None:
                kwargs["eos_token"] = eos
            case = {"messages": messages, "tools": tools, "extra": extra, "add_generation_prompt": agp}
            try:
                rendered, _ = render_jinja_template(
                    conversations=[messages], tools=tools, chat_template=source,
                    add_generation_prompt=agp, **kwargs,
                )
                case["rendered"] = rendered[0]
            except Exception as e:  # jinja2.TemplateError from raise_exception
                case["error"] = str(e)
            rendered_cases.append(case)
        out.append({"name": name, "source": source, "bos_token": bos, "eos_token": eos, "cases": rendered_cases})
    return out


def smollm_section(gguf_path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    import gguf as gguflib

    reader = gguflib.GGUFReader(str(gguf_path))
    field = reader.fields["tokenizer.ggml.add_bos_token"]
    gguf_add_bos = bool(field.parts[field.data[0]][0])

    byte_decoder = {}
    # GPT-2 bytes_to_unicode, written out independently of the Rust side.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    for b, c in zip(bs, cs):
        byte_decoder[chr(c)] = b

    # transformers builds this GGUF's pre-tokenizer as plain GPT-2 ByteLevel, ignoring
    # tokenizer.ggml.pre = "smollm". SmolLM2's own tokenizer.json (and llama.cpp's "smollm")
    # first splits every numeric char (\p{N}) off on its own: Digits(individual_digits=True)
    # then ByteLevel. The expected ids come from that pipeline over the same vocab and merges;
    # transformers' own ids are kept beside them.
    from tokenizers import Tokenizer as HfTokenizer, pre_tokenizers

    hf = HfTokenizer.from_str(tok.backend_tokenizer.to_str())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    cases = []
    for text in TEXTS:
        ids = hf.encode(text, add_special_tokens=False).ids
        ids_special = tok.encode(text, add_special_tokens=True)
        cases.append({
            "text": text,
            "ids": ids,
            "ids_transformers": tok.encode(text, add_special_tokens=False),
            "ids_with_special_transformers": ids_special,
            "decoded": tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        })
    sample_ids = [0, 1, 2, 3, 10, 33, 104, 198, 216, 260, 1000, 4093, 19556, 30000, 49151]
    token_bytes = []
    added = {t.content for t in tok.added_tokens_decoder.values()}
    for i in sample_ids:
        s = tok.convert_ids_to_tokens(i)
        b = s.encode("utf-8") if s in added else bytes(byte_decoder[c] for c in s)
        token_bytes.append({"id": i, "token": s, "hex": b.hex()})
    chats = []
    for conv in SMOLLM_CHATS:
        for agp in (False, True):
            chats.append({
                "messages": conv,
                "add_generation_prompt": agp,
                "rendered": tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=agp),
            })
    return {
        "gguf_file": gguf_path.name,
        "gguf_add_bos_token": gguf_add_bos,
        "transformers_bos_token": tok.bos_token,
        "transformers_eos_token": tok.eos_token,
        "vocab_size": len(tok),
        "cases": cases,
        "token_bytes": token_bytes,
        "chat": chats,
    }


def spm_corpus():
    """Deterministic training text: stdlib docstrings plus some multilingual lines."""
    import argparse as m1, collections as m2, json as m3, textwrap as m4, string as m5, unittest as m6
    import codecs
    import this  # noqa: F401  (prints the Zen once)

    lines = codecs.decode(this.s, "rot13").splitlines()
    for mod in (m1, m2, m3, m4, m5, m6):
        for _, obj in sorted(vars(mod).items()):
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
            if doc:
                lines.extend(doc.splitlines())
    lines += [
        "Crème brûlée, naïve façade, Ångström, Straße.",
        "Привет, как дела? Хорошо, спасибо.",
        "Γειά σου Κόσμε. Ελληνικά γράμματα.",
        "def main():\n    return 0",
        "The numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024.",
        "    indented line with  double  spaces",
        "你好 世界",
    ]
    return [l for l in lines if l.strip()]


def build_spm(workdir: Path):
    import numpy as np
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    import gguf as gguflib

    model_io = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(spm_corpus()),
        model_writer=model_io,
        model_type="bpe",
        vocab_size=1000,
        byte_fallback=True,
        split_digits=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=["<|im_start|>", "<|im_end|>"],
        num_threads=1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    model_bytes = model_io.getvalue()
    proto = pb.ModelProto()
    proto.ParseFromString(model_bytes)
    tokens = [p.piece for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]  # NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6

    SPM_GGUF.parent.mkdir(parents=True, exist_ok=True)
    w = gguflib.GGUFWriter(str(SPM_GGUF), "llama")
    w.add_name("tokenizer-spm-tiny")
    w.add_vocab_size(len(tokens))
    w.add_context_length(64)
    w.add_embedding_length(4)
    w.add_block_count(1)
    w.add_head_count(1)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    # One tiny tensor so the file is a well-formed model GGUF; nothing reads it.
    w.add_tensor("placeholder.weight", np.zeros((1, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return spm.SentencePieceProcessor(model_proto=model_bytes)


def spm_section(sp):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SPM_GGUF.parent), gguf_file=SPM_GGUF.name)
    # The same tokenizer as Hugging Face files, for Tokenizer::from_file: tokenizer.json as
    # transformers built it, and a tokenizer_config.json with the special tokens (transformers'
    # GGUF loader sets eos_token to the BOS string; the config says </s>), bos_token written in
    # the AddedToken-object form and eos_token as a plain string.
    SPM_HF_DIR.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(SPM_HF_DIR / "tokenizer.json"))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False},
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "tokenizer_class": "LlamaTokenizer",
        "clean_up_tokenization_spaces": False,
    }
    (SPM_HF_DIR / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        cases.append({
            "text": text,
            "ids": ids,
            "ids_with_special_transformers": tok.encode(text, add_special_tokens=True),
            "ids_sentencepiece": sp.encode(text),
            "decoded": tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
            "decoded_sentencepiece": sp.decode(sp.encode(text)),
        })
    return {
        "gguf_file": SPM_GGUF.name,
        "vocab_size": len(tok),
        "transformers_bos_token": tok.bos_token,
        "transformers_eos_token": tok.eos_token,
        "cases": cases,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="SmolLM2-135M-Instruct GGUF")
    args = ap.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"{args.gguf} not found (the default model; see models/src/default_model.rs)")

    import jinja2
    import sentencepiece
    import tokenizers
    import transformers

    with tempfile.TemporaryDirectory() as td:
        sp = build_spm(Path(td))
    golden = {
        "generator": {
            "script": "scripts/make_tokenizer_golden.py",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "jinja2": jinja2.__version__,
            "gguf": importlib.metadata.version("gguf"),
        },
        "smollm2": smollm_section(args.gguf),
        "spm_tiny": spm_section(sp),
        "templates": template_cases(),
    }
    GOLDEN.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes) and {SPM_GGUF} ({SPM_GGUF.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
