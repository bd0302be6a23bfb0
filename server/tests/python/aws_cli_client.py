"""The AWS CLI (`aws bedrock-runtime ...`, `aws bedrock ...`) against a running
`factory serve`, pointed at it only through AWS_ENDPOINT_URL_BEDROCK_RUNTIME and
AWS_ENDPOINT_URL_BEDROCK, as a user would. Works with CLI v1 (PyPI `awscli`) and v2.
Usage: FACTORY_URL=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
AWS=path/to/aws python3 aws_cli_client.py
(the model must answer to smollm2-135m-instruct and meta.llama3-1-8b-instruct-v1:0)."""

import json
import os
import subprocess
import sys
import tempfile

MODEL = "smollm2-135m-instruct"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
AWS = os.environ.get("AWS", "aws")


def env(**overrides):
    e = dict(os.environ)
    e.update(
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME=os.environ["FACTORY_URL"],
        AWS_ENDPOINT_URL_BEDROCK=os.environ["FACTORY_URL"],
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
        AWS_PAGER="",
        # No stray profile or config file may change what is tested.
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    e.update(overrides)
    return e


def aws(*args, **env_overrides):
    """Runs the CLI; returns (exit code, stdout, stderr)."""
    p = subprocess.run([AWS, *args], env=env(**env_overrides), capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    msgs = json.dumps([{"role": "user", "content": [{"text": "What is 2+2?"}]}])
    rc, out, err = aws(
        "bedrock-runtime", "converse", "--model-id", MODEL, "--messages", msgs,
        "--inference-config", json.dumps({"maxTokens": 12, "temperature": 0}),
        "--output", "json",
    )
    check(rc == 0, f"aws bedrock-runtime converse exits 0 ({err.strip()})")
    r = json.loads(out)
    msg = r["output"]["message"]
    check(msg["role"] == "assistant" and msg["content"][0]["text"].strip() != "", "converse text")
    u = r["usage"]
    check(u["inputTokens"] > 0 and 0 < u["outputTokens"] <= 12, "converse usage")
    check(u["totalTokens"] == u["inputTokens"] + u["outputTokens"], "converse totalTokens")
    check(r["stopReason"] in ("end_turn", "max_tokens") and r["metrics"]["latencyMs"] >= 0, "converse stopReason/metrics")

    # Greedy decoding: the CLI's answer equals a second call's (same server, same bytes).
    rc, out2, _ = aws(
        "bedrock-runtime", "converse", "--model-id", MODEL, "--messages", msgs,
        "--inference-config", json.dumps({"maxTokens": 12, "temperature": 0}),
        "--output", "json",
    )
    check(rc == 0 and json.loads(out2)["output"] == r["output"], "converse greedy is repeatable")

    with tempfile.TemporaryDirectory() as tmp:
        # fileb:// passes the body's bytes unchanged on CLI v1 and v2 alike.
        body = os.path.join(tmp, "body.json")
        with open(body, "w") as f:
            json.dump({"prompt": "The sky is", "max_gen_len": 6, "temperature": 0}, f)
        outfile = os.path.join(tmp, "out.json")
        rc, out, err = aws(
            "bedrock-runtime", "invoke-model", "--model-id", LLAMA, "--body", f"fileb://{body}",
            "--content-type", "application/json", "--accept", "application/json", outfile,
        )
        check(rc == 0, f"aws bedrock-runtime invoke-model exits 0 ({err.strip()})")
        check(json.loads(out)["contentType"] == "application/json", "invoke-model contentType")
        with open(outfile) as f:
            gen = json.load(f)
        check(isinstance(gen["generation"], str), "invoke-model generation")
        check(gen["prompt_token_count"] > 0 and 0 < gen["generation_token_count"] <= 6, "invoke-model token counts")
        check(gen["stop_reason"] in ("stop", "length"), "invoke-model stop_reason")

    rc, out, err = aws(
        "bedrock-runtime", "count-tokens", "--model-id", MODEL,
        "--input", json.dumps({"converse": {"messages": json.loads(msgs)}}), "--output", "json",
    )
    check(rc == 0 and json.loads(out)["inputTokens"] == u["inputTokens"], "count-tokens equals converse's inputTokens")

    rc, out, err = aws("bedrock", "list-foundation-models", "--output", "json")
    check(rc == 0, f"aws bedrock list-foundation-models exits 0 ({err.strip()})")
    ids = [m["modelId"] for m in json.loads(out)["modelSummaries"]]
    check(MODEL in ids, f"list-foundation-models lists {MODEL}: {ids}")
    rc, out, err = aws("bedrock", "get-foundation-model", "--model-identifier", MODEL, "--output", "json")
    check(rc == 0 and json.loads(out)["modelDetails"]["modelId"] == MODEL, "get-foundation-model")

    # Failures: the CLI prints the Bedrock error code and exits non-zero.
    rc, _, err = aws("bedrock-runtime", "converse", "--model-id", "nope.model-v1:0", "--messages", msgs)
    check(rc != 0 and "(ValidationException)" in err, f"unknown model -> ValidationException ({err.strip()})")
    rc, _, err = aws(
        "bedrock-runtime", "converse", "--model-id", MODEL, "--messages", msgs,
        AWS_SECRET_ACCESS_KEY="wrong-secret-0000000000000000000000000000",
    )
    check(rc != 0 and "(InvalidSignatureException)" in err, "wrong secret -> InvalidSignatureException")
    rc, _, err = aws(
        "bedrock-runtime", "converse", "--model-id", MODEL, "--messages", msgs,
        AWS_ACCESS_KEY_ID="FKIAUNKNOWNUNKNOWN00",
    )
    check(rc != 0 and "(UnrecognizedClientException)" in err, "unknown key -> UnrecognizedClientException")
    rc, _, err = aws(
        "bedrock-runtime", "converse", "--model-id", MODEL, "--messages", msgs,
        "--inference-config", json.dumps({"temperature": 7}),
    )
    check(rc != 0 and "(ValidationException)" in err and "inferenceConfig.temperature" in err, "temperature 7 -> ValidationException")


if __name__ == "__main__":
    main()
