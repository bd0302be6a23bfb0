"""boto3 against a running `factory serve`: the real AWS SDK, unchanged, only
pointed at the server. Usage: FACTORY_URL=http://127.0.0.1:PORT
AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... python3 boto3_client.py
(the model must answer to smollm2-135m-instruct and meta.llama3-1-8b-instruct-v1:0)."""

import json
import os
import re
import sys

import boto3
from botocore.config import Config

MODEL = "smollm2-135m-instruct"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"


def client():
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=os.environ["FACTORY_URL"],
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=300),
    )


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    c = client()
    msgs = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]
    r = c.converse(modelId=MODEL, messages=msgs, inferenceConfig={"maxTokens": 8})
    check(r["output"]["message"]["role"] == "assistant", "converse output")
    check(r["usage"]["totalTokens"] > 0 and r["stopReason"] in ("end_turn", "max_tokens"), "converse usage")
    check(len(r["ResponseMetadata"]["RequestId"]) == 36, "request id")

    events = list(c.converse_stream(modelId=MODEL, messages=msgs, inferenceConfig={"maxTokens": 8})["stream"])
    kinds = [next(iter(e)) for e in events]
    check(kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"], f"converse_stream order {kinds}")

    body = json.dumps({"prompt": "The sky is", "max_gen_len": 5})
    r = c.invoke_model(modelId=LLAMA, body=body)
    out = json.loads(r["body"].read())
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    check("generation" in out and int(headers["x-amzn-bedrock-output-token-count"]) == out["generation_token_count"], "invoke_model llama")

    r = c.invoke_model_with_response_stream(modelId=LLAMA, body=body)
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    check(chunks[-1]["stop_reason"] in ("stop", "length") and "amazon-bedrock-invocationMetrics" in chunks[-1], "invoke stream llama")

    r = c.count_tokens(modelId=MODEL, input={"converse": {"messages": msgs}})
    check(r["inputTokens"] > 0, "count_tokens")

    tool_use(c)

    try:
        c.converse(modelId="nope.model-v1:0", messages=msgs)
        check(False, "unknown model raises")
    except c.exceptions.ValidationException as e:
        check("model identifier is invalid" in str(e), "unknown model is ValidationException")

    bad = boto3.client("bedrock-runtime", endpoint_url=os.environ["FACTORY_URL"], region_name="us-east-1",
                       aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong",
                       config=Config(retries={"total_max_attempts": 1}))
    try:
        bad.converse(modelId=MODEL, messages=msgs)
        check(False, "bad secret raises")
    except bad.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] == "InvalidSignatureException", "bad secret is InvalidSignatureException")


TOOLS = [{"toolSpec": {
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}}]
TOOL_ID = re.compile(r"tooluse_[A-Za-z0-9_-]{22}")


def check_forced_stop(stop, output_tokens, max_tokens, what):
    """A forced call ends with tool_use, or max_tokens when the limit cut it."""
    check(stop == "tool_use" or (stop == "max_tokens" and output_tokens == max_tokens), f"{what} stopReason {stop}")


def tool_use(c):
    """converse / converse_stream with toolChoice tool: every field boto3 parses."""
    msgs = [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}]
    config = {"tools": TOOLS, "toolChoice": {"tool": {"name": "get_weather"}}}
    inference = {"maxTokens": 40, "temperature": 0}
    r = c.converse(modelId=MODEL, messages=msgs, toolConfig=config, inferenceConfig=inference)
    message = r["output"]["message"]
    check(message["role"] == "assistant" and len(message["content"]) == 1, "converse tool: one block")
    check(set(message["content"][0]) == {"toolUse"}, "converse tool: the block is a toolUse")
    call = message["content"][0]["toolUse"]
    check(TOOL_ID.fullmatch(call["toolUseId"]) is not None, f"converse tool: toolUseId {call['toolUseId']}")
    check(call["name"] == "get_weather" and isinstance(call["input"], dict), "converse tool: name and input")
    usage = r["usage"]
    check(usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"], "converse tool: usage")
    check(isinstance(r["metrics"]["latencyMs"], int), "converse tool: metrics")
    check_forced_stop(r["stopReason"], usage["outputTokens"], 40, "converse tool:")

    events = list(c.converse_stream(modelId=MODEL, messages=msgs, toolConfig=config,
                                    inferenceConfig=inference)["stream"])
    kinds = [next(iter(e)) for e in events]
    check(kinds[:2] == ["messageStart", "contentBlockStart"]
          and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
          and len(kinds) > 5 and set(kinds[2:-3]) == {"contentBlockDelta"}, f"converse_stream tool order {kinds}")
    check(events[0]["messageStart"]["role"] == "assistant", "converse_stream tool: messageStart")
    start = events[1]["contentBlockStart"]
    check(start["contentBlockIndex"] == 0 and start["start"]["toolUse"]["name"] == "get_weather"
          and TOOL_ID.fullmatch(start["start"]["toolUse"]["toolUseId"]) is not None, "converse_stream tool: start")
    deltas = [e["contentBlockDelta"] for e in events[2:-3]]
    check(all(d["contentBlockIndex"] == 0 for d in deltas), "converse_stream tool: delta indices")
    streamed = json.loads("".join(d["delta"]["toolUse"]["input"] for d in deltas))
    check(streamed == call["input"], "converse_stream tool: input pieces make the converse input")
    check(events[-3]["contentBlockStop"]["contentBlockIndex"] == 0, "converse_stream tool: stop")
    check(events[-2]["messageStop"]["stopReason"] == r["stopReason"], "converse_stream tool: stopReason")
    check(events[-1]["metadata"]["usage"] == usage and isinstance(events[-1]["metadata"]["metrics"]["latencyMs"], int),
          "converse_stream tool: metadata")

    # The call and its result go back as the next turn.
    result = {"toolResult": {"toolUseId": call["toolUseId"], "content": [{"json": {"temperature_c": 21}}],
                             "status": "success"}}
    follow = msgs + [message, {"role": "user", "content": [result, {"text": "Answer briefly."}]}]
    r2 = c.converse(modelId=MODEL, messages=follow, toolConfig={"tools": TOOLS}, inferenceConfig={"maxTokens": 8})
    check(r2["output"]["message"]["role"] == "assistant"
          and r2["stopReason"] in ("end_turn", "max_tokens", "tool_use"), "converse toolResult round trip")

    try:
        c.converse(modelId=MODEL, messages=msgs, toolConfig={"tools": TOOLS, "toolChoice": {"tool": {"name": "nope"}}})
        check(False, "unknown tool choice raises")
    except c.exceptions.ValidationException as e:
        check("nope" in str(e), "unknown tool choice is ValidationException")


if __name__ == "__main__":
    main()
