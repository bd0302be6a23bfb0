//! Engine log-probabilities as OpenAI reports them: chat's `logprobs.content`
//! entries and the legacy completions object (`tokens`, `token_logprobs`,
//! `top_logprobs`, `text_offset`).

use factory_engine::TokenLogprobs;
use factory_models::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

/// What OpenAI reports for a token the model rules out (JSON has no -inf).
pub const IMPOSSIBLE: f64 = -9999.0;

/// One generated token with its alternatives, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// The token's text (invalid UTF-8, e.g. half a character, replaced).
    pub token: String,
    /// The token's exact bytes.
    pub bytes: Vec<u8>,
    /// ln p of the token.
    pub logprob: f64,
    /// The most likely tokens, best first: (text, bytes, ln p).
    pub top: Vec<(String, Vec<u8>, f64)>,
}

/// `lp` of token `id` in text form.
pub fn token_info(tokenizer: &Tokenizer, id: u32, lp: &TokenLogprobs) -> TokenInfo {
    let text = |id: u32| {
        let bytes = tokenizer.token_bytes(id);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (token, bytes) = text(id);
    TokenInfo {
        token,
        bytes,
        logprob: finite(lp.logprob),
        top: lp
            .top
            .iter()
            .map(|&(alt, l)| {
                let (t, b) = text(alt);
                (t, b, finite(l))
            })
            .collect(),
    }
}

/// `l` as a JSON-safe f64 with the f32's shortest digits (`-0.31`, not
/// `-0.3100000023841858`), floored at [`IMPOSSIBLE`].
fn finite(l: f32) -> f64 {
    if !l.is_finite() {
        return IMPOSSIBLE;
    }
    let shortest = l.to_string().parse::<f64>().unwrap_or(f64::from(l));
    shortest.max(IMPOSSIBLE)
}

/// Chat's `logprobs` object for `tokens`: `{"content": [...], "refusal": null}`.
pub fn chat(tokens: &[TokenInfo]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(tok, bytes, l)| json!({"token": tok, "logprob": l, "bytes": bytes}))
                .collect();
            json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top})
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The legacy completions `logprobs` object for `tokens`, whose text starts
/// `offset` characters into the completion; returns it and the offset after.
/// Each `top_logprobs` entry also holds the sampled token, as OpenAI's does.
pub fn completion(tokens: &[TokenInfo], mut offset: usize) -> (Value, usize) {
    let mut texts = Vec::with_capacity(tokens.len());
    let mut logprobs = Vec::with_capacity(tokens.len());
    let mut tops = Vec::with_capacity(tokens.len());
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        texts.push(Value::from(t.token.clone()));
        logprobs.push(json!(t.logprob));
        let mut top = Map::new();
        for (tok, _, l) in &t.top {
            // Two tokens with one text (rare: replaced bytes) keep the likelier.
            top.entry(tok.clone()).or_insert_with(|| json!(l));
        }
        top.entry(t.token.clone())
            .or_insert_with(|| json!(t.logprob));
        tops.push(Value::Object(top));
        offsets.push(json!(offset));
        offset += t.token.chars().count();
    }
    let value = json!({
        "tokens": texts,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    });
    (value, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(token: &str, logprob: f64, top: &[(&str, f64)]) -> TokenInfo {
        TokenInfo {
            token: token.into(),
            bytes: token.as_bytes().to_vec(),
            logprob,
            top: top
                .iter()
                .map(|(t, l)| (t.to_string(), t.as_bytes().to_vec(), *l))
                .collect(),
        }
    }

    #[test]
    fn chat_entries_carry_token_bytes_and_alternatives() {
        let v = chat(&[info("Hi", -0.5, &[("Hi", -0.5), ("Yo", -1.5)])]);
        assert_eq!(v["content"][0]["token"], "Hi");
        assert_eq!(v["content"][0]["bytes"], json!([72, 105]));
        assert_eq!(v["content"][0]["top_logprobs"][1]["token"], "Yo");
        assert_eq!(v["content"][0]["top_logprobs"][1]["logprob"], -1.5);
        assert_eq!(v["refusal"], Value::Null);
    }

    #[test]
    fn completion_offsets_continue_and_the_sampled_token_is_in_top() {
        let tokens = [info("ab", -0.1, &[]), info("é", -2.0, &[("x", -0.2)])];
        let (v, next) = completion(&tokens, 3);
        assert_eq!(v["text_offset"], json!([3, 5]));
        assert_eq!(next, 6);
        assert_eq!(v["tokens"], json!(["ab", "é"]));
        assert_eq!(v["top_logprobs"][1], json!({"x": -0.2, "é": -2.0}));
        assert_eq!(v["top_logprobs"][0], json!({"ab": -0.1}));
    }

    #[test]
    fn impossible_tokens_are_reported_finite() {
        assert_eq!(finite(f32::NEG_INFINITY), IMPOSSIBLE);
        assert_eq!(finite(-1e9), IMPOSSIBLE);
        assert_eq!(finite(-0.31), -0.31);
        assert_eq!(json!(finite(-0.31)).to_string(), "-0.31");
    }
}
