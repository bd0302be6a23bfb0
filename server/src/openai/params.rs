//! Reading an OpenAI request body: typed fields with the field's name in every
//! error, and the generation settings chat and completions share.
//!
//! As OpenAI does, members this server does not know are ignored and `null`
//! counts as absent; a known member of the wrong type or out of range is a 400
//! naming it. Known features this server cannot honour (n > 1, logit_bias,
//! tools, JSON modes) are refused rather than silently dropped.

use factory_engine::{GenerateRequest, SamplingParams};
use serde_json::{Map, Value};

use super::error::OpenAiError;

/// Most stop sequences a request may give (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// A request body's members.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
}

/// Parses `body` as a JSON object.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, OpenAiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(OpenAiError::invalid(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(OpenAiError::invalid(format!(
            "We could not parse the JSON body of your request ({e}). The OpenAI API expects a JSON payload."
        ))),
    }
}

impl<'a> Fields<'a> {
    /// Fields of `obj`.
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self { obj }
    }

    /// The member `key`, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A required string.
    pub fn required_str(&self, key: &str) -> Result<&'a str, OpenAiError> {
        self.str(key)?.ok_or_else(|| OpenAiError::missing(key))
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, OpenAiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(OpenAiError::invalid_type(key, "a string", v)),
        }
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, OpenAiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(OpenAiError::invalid_type(key, "a boolean", v)),
        }
    }

    /// An optional integer.
    pub fn int(&self, key: &str) -> Result<Option<i64>, OpenAiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            // Larger than i64: treated as the largest, so range checks refuse it.
            Some(Value::Number(n)) if n.is_u64() => Ok(Some(i64::MAX)),
            Some(v) => Err(OpenAiError::invalid_type(key, "an integer", v)),
        }
    }

    /// An optional integer in `lo..=hi`.
    pub fn int_in(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, OpenAiError> {
        match self.int(key)? {
            Some(v) if !(lo..=hi).contains(&v) => Err(OpenAiError::invalid_value(
                key,
                format!(
                    "Invalid '{key}': expected an integer between {lo} and {hi}, but got {v} instead."
                ),
            )),
            v => Ok(v),
        }
    }

    /// An optional number in `lo..=hi`.
    pub fn number_in(&self, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, OpenAiError> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(v) => return Err(OpenAiError::invalid_type(key, "a number", v)),
        };
        if !(lo..=hi).contains(&v) {
            return Err(OpenAiError::invalid_value(
                key,
                format!(
                    "Invalid '{key}': expected a value between {lo} and {hi}, but got {v} instead."
                ),
            ));
        }
        Ok(Some(v as f32))
    }

    /// An optional object.
    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, OpenAiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(OpenAiError::invalid_type(key, "an object", v)),
        }
    }
}

/// The generation settings both endpoints take.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    /// The model as the client named it.
    pub model: String,
    /// Most tokens to generate; `None` takes the server's default.
    pub max_tokens: Option<usize>,
    /// Sampling settings (temperature defaults to 1, as OpenAI's does).
    pub sampling: SamplingParams,
    /// Stop sequences (at most [`MAX_STOP`]).
    pub stop: Vec<String>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// With `stream`: a last chunk carrying `usage`.
    pub include_usage: bool,
    /// vLLM's `ignore_eos`: generate past end-of-turn up to the limit (load
    /// generators such as guidellm send it to get fixed output lengths).
    pub ignore_eos: bool,
}

impl GenParams {
    /// Reads the shared settings; `max_tokens_keys` are the names that set the
    /// limit, the first present winning (chat prefers `max_completion_tokens`).
    pub fn parse(f: &Fields<'_>, max_tokens_keys: &[&str]) -> Result<Self, OpenAiError> {
        let model = f.required_str("model")?.to_string();
        let mut max_tokens = None;
        for key in max_tokens_keys {
            if let Some(n) = f.int_in(key, 1, i64::from(u32::MAX))? {
                max_tokens = Some(n as usize);
                break;
            }
        }
        if let Some(n) = f.int("n")? {
            if n != 1 {
                return Err(OpenAiError::invalid_value(
                    "n",
                    format!("Invalid 'n': this server generates one choice per request (n = 1), but got {n}."),
                ));
            }
        }
        if f.object("logit_bias")?.is_some_and(|m| !m.is_empty()) {
            return Err(OpenAiError::invalid_value(
                "logit_bias",
                "logit_bias is not supported by this server.",
            ));
        }
        if let Some(format) = f.object("response_format")? {
            let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "text" {
                return Err(OpenAiError::invalid_value(
                    "response_format",
                    format!("response_format type '{kind}' is not supported by this server; only 'text' is."),
                ));
            }
        }
        let temperature = f.number_in("temperature", 0.0, 2.0)?.unwrap_or(1.0);
        let top_p = f.number_in("top_p", 0.0, 1.0)?.unwrap_or(1.0);
        let presence_penalty = f.number_in("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
        let frequency_penalty = f.number_in("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
        // Any 64-bit integer is a seed; negative ones keep their bits.
        let seed = f.int("seed")?.map(|s| s as u64);
        let stream = f.bool("stream")?.unwrap_or(false);
        let ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
        let mut include_usage = false;
        if let Some(options) = f.object("stream_options")? {
            if !stream {
                return Err(OpenAiError::invalid_value(
                    "stream_options",
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                ));
            }
            include_usage = Fields::new(options)
                .bool("include_usage")
                .map_err(|e| rename(e, "stream_options.include_usage"))?
                .unwrap_or(false);
        }
        let mut sampling = SamplingParams {
            temperature,
            top_p,
            seed,
            presence_penalty,
            frequency_penalty,
            ..SamplingParams::default()
        };
        // top_p 0 keeps only the most likely token: greedy (the sampler needs top_p > 0).
        if sampling.top_p <= 0.0 {
            sampling.temperature = 0.0;
            sampling.top_p = 1.0;
        }
        Ok(Self {
            model,
            max_tokens,
            sampling,
            stop: stop_sequences(f)?,
            stream,
            include_usage,
            ignore_eos,
        })
    }

    /// The engine request for `prompt`, with `default_max_tokens` when the
    /// client set no limit and `logprobs` alternatives when it asked for them.
    pub fn request(
        &self,
        prompt: Vec<u32>,
        default_max_tokens: usize,
        logprobs: Option<usize>,
    ) -> GenerateRequest {
        let mut req = GenerateRequest::new(prompt, self.max_tokens.unwrap_or(default_max_tokens));
        req.sampling = self.sampling.clone();
        req.stop_strings = self.stop.clone();
        req.ignore_eos = self.ignore_eos;
        req.logprobs = logprobs;
        req
    }
}

/// `stop`: a string or an array of at most four strings.
fn stop_sequences(f: &Fields<'_>) -> Result<Vec<String>, OpenAiError> {
    match f.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(OpenAiError::invalid_value(
                    "stop",
                    format!(
                        "Invalid 'stop': expected an array with maximum length {MAX_STOP}, but got an array with length {} instead.",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(OpenAiError::invalid_type(
                        &format!("stop[{i}]"),
                        "a string",
                        other,
                    )),
                })
                .collect()
        }
        Some(v) => Err(OpenAiError::invalid_type(
            "stop",
            "a string or an array of strings",
            v,
        )),
    }
}

/// `err` reported against `param` (for members of nested objects).
pub fn rename(mut err: OpenAiError, param: &str) -> OpenAiError {
    if let Some(old) = err.param.replace(param.to_string()) {
        err.message = err
            .message
            .replace(&format!("'{old}'"), &format!("'{param}'"));
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<GenParams, OpenAiError> {
        let Value::Object(m) = v else {
            panic!("object expected")
        };
        GenParams::parse(&Fields::new(&m), &["max_completion_tokens", "max_tokens"])
    }

    #[test]
    fn defaults_follow_openai() {
        let p = parse(json!({"model": "m", "user": "ignored", "extra": {"x": 1}})).expect("ok");
        assert_eq!(p.sampling.temperature, 1.0);
        assert_eq!(p.sampling.top_p, 1.0);
        assert_eq!(p.max_tokens, None);
        assert!(!p.stream && !p.include_usage && !p.ignore_eos && p.stop.is_empty());
    }

    #[test]
    fn ignore_eos_reaches_the_engine_request() {
        let p = parse(json!({"model": "m", "ignore_eos": true, "max_tokens": 7})).expect("ok");
        let req = p.request(vec![1, 2], 100, None);
        assert!(req.ignore_eos);
        assert_eq!(req.max_tokens, 7);
        let p = parse(json!({"model": "m", "ignore_eos": null})).expect("ok");
        assert!(!p.request(vec![1], 100, None).ignore_eos);
    }

    #[test]
    fn settings_are_read_and_nulls_are_absent() {
        let p = parse(json!({
            "model": "m", "max_tokens": 9, "max_completion_tokens": 5, "temperature": 0,
            "top_p": 0.5, "seed": -1, "stop": ["a", "b"], "presence_penalty": 1.5,
            "frequency_penalty": -0.5, "stream": true, "stream_options": {"include_usage": true},
            "n": 1, "logit_bias": {}, "response_format": {"type": "text"}, "top_k": null,
        }))
        .expect("ok");
        assert_eq!(p.max_tokens, Some(5));
        assert_eq!(p.sampling.temperature, 0.0);
        assert_eq!(p.sampling.top_p, 0.5);
        assert_eq!(p.sampling.seed, Some(u64::MAX));
        assert_eq!(p.stop, vec!["a", "b"]);
        assert_eq!(p.sampling.presence_penalty, 1.5);
        assert!(p.stream && p.include_usage);
        let p =
            parse(json!({"model": "m", "stop": "x", "max_tokens": null, "top_p": 0})).expect("ok");
        assert_eq!(p.stop, vec!["x"]);
        assert_eq!(p.max_tokens, None);
        assert_eq!((p.sampling.temperature, p.sampling.top_p), (0.0, 1.0));
    }

    #[test]
    fn wrong_types_and_ranges_name_the_param() {
        let cases = [
            (json!({}), "model"),
            (json!({"model": 3}), "model"),
            (json!({"model": "m", "max_tokens": "9"}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 0}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 1.5}), "max_tokens"),
            (json!({"model": "m", "temperature": 2.5}), "temperature"),
            (json!({"model": "m", "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "top_p": 1.1}), "top_p"),
            (
                json!({"model": "m", "presence_penalty": -3}),
                "presence_penalty",
            ),
            (json!({"model": "m", "seed": "1"}), "seed"),
            (json!({"model": "m", "stop": 1}), "stop"),
            (json!({"model": "m", "stop": ["a", 1]}), "stop[1]"),
            (
                json!({"model": "m", "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (json!({"model": "m", "n": 2}), "n"),
            (json!({"model": "m", "stream": "yes"}), "stream"),
            (json!({"model": "m", "ignore_eos": 1}), "ignore_eos"),
            (
                json!({"model": "m", "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (
                json!({"model": "m", "stream": true, "stream_options": {"include_usage": 1}}),
                "stream_options.include_usage",
            ),
            (json!({"model": "m", "logit_bias": {"1": 5}}), "logit_bias"),
            (
                json!({"model": "m", "response_format": {"type": "json_object"}}),
                "response_format",
            ),
        ];
        for (body, param) in cases {
            let e = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
    }
}
