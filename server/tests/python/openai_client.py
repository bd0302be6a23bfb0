"""The official `openai` Python client against a running `factory serve`,
unchanged, only pointed at the server's /v1. Usage:
FACTORY_URL=http://127.0.0.1:PORT OPENAI_API_KEY=... python3 openai_client.py
(the model must answer to smollm2-135m-instruct)."""

import os
import sys

import openai
from openai import OpenAI

MODEL = "smollm2-135m-instruct"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def expect_error(kind, call, what):
    try:
        call()
    except kind as e:
        return e
    check(False, f"{what} raises {kind.__name__}")


def main():
    base = os.environ["FACTORY_URL"].rstrip("/") + "/v1"
    c = OpenAI(base_url=base, api_key=os.environ["OPENAI_API_KEY"], max_retries=0, timeout=300)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]

    r = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0)
    check(r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL, "chat object")
    choice = r.choices[0]
    check(len(r.choices) == 1 and choice.index == 0 and choice.message.role == "assistant", "chat choice")
    check("Paris" in choice.message.content, f"chat answer {choice.message.content!r}")
    check(choice.finish_reason in ("stop", "length") and choice.logprobs is None, "chat finish_reason")
    u = r.usage
    check(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12
          and u.total_tokens == u.prompt_tokens + u.completion_tokens, "chat usage")
    check(r._request_id is not None and len(r._request_id) == 36, "x-request-id")

    stream = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    check(chunks[0].choices[0].delta.role == "assistant", "stream starts with the role")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(text == choice.message.content, "streamed text equals the whole answer")
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    check(reasons == [choice.finish_reason], f"one finish_reason {reasons}")
    last = chunks[-1]
    check(last.choices == [] and last.usage is not None, "usage chunk last")
    check((last.usage.prompt_tokens, last.usage.completion_tokens) == (u.prompt_tokens, u.completion_tokens),
          "streamed usage equals the engine's count")

    r = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=5, temperature=0,
                                  logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    # The end-of-turn token is counted but is no content.
    n = r.usage.completion_tokens - (1 if r.choices[0].finish_reason == "stop" else 0)
    check(len(content) == n, f"one logprob per token ({len(content)} vs {n})")
    check(all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token and t.logprob <= 0
              and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
              for t in content), "greedy tokens are their own top logprob")
    check("".join(t.token for t in content) == r.choices[0].message.content, "logprob tokens spell the answer")

    r = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=2)
    check(r.object == "text_completion" and r.id.startswith("cmpl-"), "completion object")
    check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5, "completion length")
    lp = r.choices[0].logprobs
    check(len(lp.tokens) == 5 and len(lp.token_logprobs) == 5 and len(lp.text_offset) == 5
          and all(lp.tokens[i] in lp.top_logprobs[i] for i in range(5)), "completion logprobs")
    s = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0,
                             stream=True, stream_options={"include_usage": True})
    parts = list(s)
    check("".join(p.choices[0].text for p in parts if p.choices) == r.choices[0].text, "streamed completion")
    check(parts[-1].usage.completion_tokens == 5, "streamed completion usage")

    ids = [m.id for m in c.models.list()]
    check(ids and ids[0] == MODEL, f"models.list {ids}")
    m = c.models.retrieve(MODEL)
    check(m.id == MODEL and m.object == "model" and m.owned_by == "factory", "models.retrieve")

    e = expect_error(openai.NotFoundError,
                     lambda: c.chat.completions.create(model="gpt-4o", messages=msgs), "unknown model")
    check(e.status_code == 404 and e.code == "model_not_found" and e.param == "model", "unknown model is 404 model_not_found")
    e = expect_error(openai.BadRequestError,
                     lambda: c.chat.completions.create(model=MODEL, messages=msgs, n=2), "n=2")
    check(e.status_code == 400 and e.param == "n" and e.type == "invalid_request_error", "n=2 is 400 naming n")
    e = expect_error(openai.BadRequestError,
                     lambda: c.chat.completions.create(model=MODEL, messages=msgs, temperature=5), "temperature 5")
    check(e.param == "temperature", "bad temperature names it")
    bad = OpenAI(base_url=base, api_key="not-a-key", max_retries=0)
    e = expect_error(openai.AuthenticationError, lambda: bad.models.list(), "bad key")
    check(e.status_code == 401 and e.code == "invalid_api_key", "bad key is 401 invalid_api_key")


if __name__ == "__main__":
    main()
