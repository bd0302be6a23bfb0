"""boto3 against a running `factory serve`: the real AWS SDK, unchanged, only
pointed at the server. Usage: FACTORY_URL=http://127.0.0.1:PORT
AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... python3 boto3_client.py
(the model must answer to smollm2-135m-instruct and meta.llama3-1-8b-instruct-v1:0)."""

import json
import os
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


if __name__ == "__main__":
    main()
