"""boto3 InvokeModel / InvokeModelWithResponseStream against `factory serve`, one
native body family at a time, checking every field of each documented shape.
The client is pointed at the server only by AWS_ENDPOINT_URL_BEDROCK_RUNTIME (no
endpoint_url argument), as an unchanged application would be.
Usage: FACTORY_URL=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
python3 boto3_families.py (the model must answer to the aliases in serve_config.toml)."""

import json
import os
import sys

import boto3
from botocore.config import Config

LLAMA = "meta.llama3-1-8b-instruct-v1:0"
MISTRAL = "mistral.mistral-7b-instruct-v0:2"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
NOVA = "amazon.nova-micro-v1:0"
METRICS = "amazon-bedrock-invocationMetrics"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def client():
    os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = os.environ["FACTORY_URL"]
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=300),
    )


def invoke(c, model, body):
    """Returns (parsed body, token-count headers as ints)."""
    r = c.invoke_model(modelId=model, body=json.dumps(body), contentType="application/json", accept="application/json")
    check(r["contentType"] == "application/json", f"{model}: contentType")
    h = r["ResponseMetadata"]["HTTPHeaders"]
    counts = (int(h["x-amzn-bedrock-input-token-count"]), int(h["x-amzn-bedrock-output-token-count"]))
    check(int(h["x-amzn-bedrock-invocation-latency"]) >= 0, f"{model}: latency header")
    return json.loads(r["body"].read()), counts


def stream(c, model, body):
    """Returns the decoded chunk objects."""
    r = c.invoke_model_with_response_stream(modelId=model, body=json.dumps(body), contentType="application/json")
    check(r["contentType"] == "application/json", f"{model}: stream contentType")
    events = list(r["body"])
    check(all(list(e) == ["chunk"] for e in events), f"{model}: only chunk events")
    chunks = [json.loads(e["chunk"]["bytes"]) for e in events]
    check(len(chunks) >= 2, f"{model}: several chunks")
    return chunks


def check_metrics(model, m, inp, out):
    check(m["inputTokenCount"] == inp and m["outputTokenCount"] == out, f"{model}: invocationMetrics counts")
    check(m["invocationLatency"] >= m["firstByteLatency"] >= 0, f"{model}: invocationMetrics latencies")


def llama(c):
    body = {"prompt": "The capital of France is", "max_gen_len": 6, "temperature": 0}
    out, (inp, outn) = invoke(c, LLAMA, body)
    check(set(out) == {"generation", "prompt_token_count", "generation_token_count", "stop_reason"}, "llama keys")
    check(out["prompt_token_count"] == inp and out["generation_token_count"] == outn, "llama counts = headers")
    check(out["stop_reason"] in ("stop", "length"), "llama stop_reason")
    chunks = stream(c, LLAMA, body)
    check(chunks[0]["prompt_token_count"] == inp, "llama first chunk carries prompt_token_count")
    check(all(ch["prompt_token_count"] is None for ch in chunks[1:]), "llama later chunks: prompt_token_count null")
    check(all(ch["stop_reason"] is None for ch in chunks[:-1]), "llama stop_reason only at the end")
    check("".join(ch["generation"] for ch in chunks) == out["generation"], "llama stream text = invoke text")
    check(chunks[-1]["stop_reason"] == out["stop_reason"], "llama stream stop_reason")
    check_metrics("llama", chunks[-1][METRICS], inp, outn)


def mistral(c):
    body = {"prompt": "<s>[INST] Name a colour. [/INST]", "max_tokens": 6, "temperature": 0, "top_k": 5}
    out, (inp, outn) = invoke(c, MISTRAL, body)
    check(list(out) == ["outputs"] and len(out["outputs"]) == 1, "mistral outputs")
    o = out["outputs"][0]
    check(isinstance(o["text"], str) and o["stop_reason"] in ("stop", "length"), "mistral output fields")
    chunks = stream(c, MISTRAL, body)
    check("".join(ch["outputs"][0]["text"] for ch in chunks) == o["text"], "mistral stream text = invoke text")
    check(all(ch["outputs"][0]["stop_reason"] is None for ch in chunks[:-1]), "mistral stop_reason only at the end")
    check(chunks[-1]["outputs"][0]["stop_reason"] == o["stop_reason"], "mistral stream stop_reason")
    check_metrics("mistral", chunks[-1][METRICS], inp, outn)


def claude(c):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 6,
        "temperature": 0,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
    }
    out, (inp, outn) = invoke(c, CLAUDE, body)
    check(out["type"] == "message" and out["role"] == "assistant" and out["id"].startswith("msg_"), "claude envelope")
    check(out["content"][0]["type"] == "text" and isinstance(out["content"][0]["text"], str), "claude content")
    check(out["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence") and "stop_sequence" in out, "claude stop")
    check(out["usage"]["input_tokens"] == inp and out["usage"]["output_tokens"] == outn, "claude usage = headers")
    chunks = stream(c, CLAUDE, body)
    types = [ch["type"] for ch in chunks]
    check(types[:2] == ["message_start", "content_block_start"], f"claude stream start {types[:2]}")
    check(types[-3:] == ["content_block_stop", "message_delta", "message_stop"], f"claude stream end {types[-3:]}")
    check(chunks[0]["message"]["usage"]["input_tokens"] == inp, "claude message_start usage")
    text = "".join(ch["delta"]["text"] for ch in chunks if ch["type"] == "content_block_delta")
    check(text == out["content"][0]["text"], "claude stream text = invoke text")
    check(chunks[-2]["delta"]["stop_reason"] == out["stop_reason"] and chunks[-2]["usage"]["output_tokens"] == outn, "claude message_delta")
    check_metrics("claude", chunks[-1][METRICS], inp, outn)


def titan(c):
    body = {"inputText": "User: Name a colour.\nBot:", "textGenerationConfig": {"maxTokenCount": 6, "temperature": 0}}
    out, (inp, outn) = invoke(c, TITAN, body)
    check(out["inputTextTokenCount"] == inp and len(out["results"]) == 1, "titan envelope")
    res = out["results"][0]
    check(res["tokenCount"] == outn and res["completionReason"] in ("FINISH", "LENGTH", "STOP_CRITERIA_MET"), "titan result")
    chunks = stream(c, TITAN, body)
    check("".join(ch["outputText"] for ch in chunks) == res["outputText"], "titan stream text = invoke text")
    check(all(ch["completionReason"] is None for ch in chunks[:-1]), "titan completionReason only at the end")
    check(chunks[-1]["completionReason"] == res["completionReason"], "titan stream completionReason")
    check(chunks[-1]["totalOutputTextTokenCount"] == outn, "titan totalOutputTextTokenCount")
    check_metrics("titan", chunks[-1][METRICS], inp, outn)


def nova(c):
    body = {
        "schemaVersion": "messages-v1",
        "system": [{"text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"text": "Name a colour."}]}],
        "inferenceConfig": {"maxTokens": 6, "temperature": 0},
    }
    out, (inp, outn) = invoke(c, NOVA, body)
    check(out["output"]["message"]["role"] == "assistant", "nova message")
    check(out["stopReason"] in ("end_turn", "max_tokens", "stop_sequence"), "nova stopReason")
    u = out["usage"]
    check(u["inputTokens"] == inp and u["outputTokens"] == outn and u["totalTokens"] == inp + outn, "nova usage")
    chunks = stream(c, NOVA, body)
    kinds = [next(k for k in ch if k != METRICS) for ch in chunks]
    check(kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"], f"nova order {kinds}")
    text = "".join(ch["contentBlockDelta"]["delta"]["text"] for ch in chunks if "contentBlockDelta" in ch)
    check(text == out["output"]["message"]["content"][0]["text"], "nova stream text = invoke text")
    check(chunks[-1]["metadata"]["usage"]["outputTokens"] == outn, "nova metadata usage")
    check_metrics("nova", chunks[-1][METRICS], inp, outn)


def malformed(c):
    # A body of the wrong family for the id's provider: Bedrock's message style.
    try:
        c.invoke_model(modelId=CLAUDE, body=json.dumps({"prompt": "hi"}))
        check(False, "wrong-family body raises")
    except c.exceptions.ValidationException as e:
        check(str(e).find("Malformed input request") >= 0, "wrong-family body -> Malformed input request")
    try:
        c.invoke_model(modelId=LLAMA, body=b"{not json")
        check(False, "bad JSON raises")
    except c.exceptions.ValidationException:
        check(True, "bad JSON -> ValidationException")


def main():
    c = client()
    llama(c)
    mistral(c)
    claude(c)
    titan(c)
    nova(c)
    malformed(c)


if __name__ == "__main__":
    main()
