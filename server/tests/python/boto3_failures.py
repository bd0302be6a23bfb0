"""boto3 against `factory serve` with tiny limits (serve_limits_config.toml):
the failures a Bedrock client must handle arrive as the exceptions botocore
raises for real Bedrock. Usage: FACTORY_URL=http://127.0.0.1:PORT
AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... python3 boto3_failures.py"""

import json
import os
import signal
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import EventStreamError

# A base-model continuation that keeps going: long enough to outlast 2 s.
COUNTING = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_gen_len": 2048, "temperature": 0}
LLAMA = "meta.llama3-1-8b-instruct-v1:0"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def client():
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=os.environ["FACTORY_URL"],
        region_name="us-east-1",
        # One attempt: the SDK would otherwise retry 429/503 on its own.
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


def expect(c, exc_name, fn, what):
    try:
        fn()
    except getattr(c.exceptions, exc_name) as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        check(True, f"{what} -> {exc_name} ({status}): {e.response['Error']['Message']}")
        return e
    except Exception as e:  # noqa: BLE001 - report what came instead
        check(False, f"{what}: expected {exc_name}, got {type(e).__name__}: {e}")
    check(False, f"{what}: expected {exc_name}, got success")


def main():
    c = client()
    msgs = [{"role": "user", "content": [{"text": "Hi"}]}]

    # Request timeout: non-streaming -> ModelTimeoutException (408).
    t0 = time.monotonic()
    e = expect(c, "ModelTimeoutException", lambda: c.invoke_model(modelId=LLAMA, body=json.dumps(COUNTING)), "invoke past request_timeout")
    check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 408, "ModelTimeoutException is 408")
    check(time.monotonic() - t0 < 30, "the timeout fires near its 2 s")

    # Streaming: the stream starts, then ends with a modelTimeoutException event.
    r = c.invoke_model_with_response_stream(modelId=LLAMA, body=json.dumps(COUNTING))
    chunks = 0
    try:
        for event in r["body"]:
            chunks += "chunk" in event
        check(False, "stream past request_timeout raises")
    except EventStreamError as e:
        # botocore raises exception events of a stream as EventStreamError.
        check(e.response["Error"]["Code"] == "modelTimeoutException", f"stream error code {e.response['Error']['Code']}")
        check(chunks > 0, f"stream past request_timeout: {chunks} chunks, then modelTimeoutException")

    # Queue full: one request running, none may wait -> ThrottlingException (429).
    started = threading.Event()
    holder = {}

    def hold():
        s = client().invoke_model_with_response_stream(modelId=LLAMA, body=json.dumps(COUNTING))
        try:
            for event in s["body"]:
                started.set()
        except Exception as exc:  # noqa: BLE001 - it times out by design
            holder["ended"] = type(exc).__name__
        started.set()

    t = threading.Thread(target=hold)
    t.start()
    check(started.wait(60), "a long stream is running")
    e = expect(c, "ThrottlingException", lambda: c.converse(modelId="tight", messages=msgs), "second request with the queue full")
    check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 429, "ThrottlingException is 429")
    t.join()
    # Capacity comes back once the running request has ended.
    r = c.converse(modelId="tight", messages=msgs, inferenceConfig={"maxTokens": 4})
    check(r["usage"]["outputTokens"] > 0, "served again after the running request ended")

    # Per-model limits: prompt and max tokens.
    long_msgs = [{"role": "user", "content": [{"text": "word " * 200}]}]
    e = expect(c, "ValidationException", lambda: c.converse(modelId="short", messages=long_msgs), "prompt above max_prompt_tokens")
    check("Input is too long for requested model." in e.response["Error"]["Message"], "too-long message is Bedrock's")
    e = expect(
        c, "ValidationException",
        lambda: c.converse(modelId="short", messages=msgs, inferenceConfig={"maxTokens": 100}),
        "maxTokens above max_max_tokens",
    )
    check("exceeds the model limit of 32" in e.response["Error"]["Message"], "max tokens message names the limit")
    r = c.converse(modelId="short", messages=msgs, inferenceConfig={"maxTokens": 32})
    check(r["usage"]["outputTokens"] <= 32, "within the limits it serves")

    # Draining: after SIGTERM, with a request in flight, new ones get
    # ServiceUnavailableException (503) until it ends; then the server exits.
    pid = int(os.environ.get("FACTORY_PID", "0"))
    if pid:
        started.clear()
        t = threading.Thread(target=hold)
        t.start()
        check(started.wait(60), "a long stream is running before SIGTERM")
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        e = expect(c, "ServiceUnavailableException", lambda: c.converse(modelId="short", messages=msgs), "request while draining")
        check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, "ServiceUnavailableException is 503")
        t.join()


if __name__ == "__main__":
    main()
