//! Strict checks of native InvokeModel bodies, reported the way Bedrock reports
//! them: one `#: ...` per violation, all in one ValidationException
//! (reference/bedrock-api.md 3.4, 6).

use serde_json::{Map, Value};

use crate::bedrock::BedrockError;

/// Parses `body` as a JSON object, or fails as Bedrock does.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BedrockError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(malformed(&[format!(
            "#: expected type: JSONObject, found: {}",
            type_name(&other)
        )])),
        Err(e) => Err(BedrockError::validation(format!(
            "Malformed input request: the body is not valid JSON ({e}), please reformat your input and try again."
        ))),
    }
}

/// The error for `violations`, each a `#...: ...` text.
pub fn malformed(violations: &[String]) -> BedrockError {
    BedrockError::validation(format!(
        "Malformed input request: {}, please reformat your input and try again.",
        violations.concat()
    ))
}

/// The JSON-schema type name Bedrock's messages use.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

/// Reads one JSON object's members, collecting every violation.
#[derive(Debug)]
pub struct ObjectReader<'a> {
    obj: &'a Map<String, Value>,
    path: String,
    violations: Vec<String>,
}

impl<'a> ObjectReader<'a> {
    /// A reader of `obj` found at JSON pointer `path` (`#` for the root).
    pub fn new(obj: &'a Map<String, Value>, path: &str) -> Self {
        Self {
            obj,
            path: path.to_string(),
            violations: Vec::new(),
        }
    }

    /// Records a violation at `key` (or at this object when `key` is empty).
    pub fn violation(&mut self, key: &str, text: impl std::fmt::Display) {
        let at = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{key}", self.path)
        };
        self.violations.push(format!("{at}: {text}"));
    }

    /// Flags every member not in `allowed`.
    pub fn only(&mut self, allowed: &[&str]) {
        let extra: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in extra {
            self.violation("", format!("extraneous key [{k}] is not permitted"));
        }
    }

    /// Member `key`, flagging it when required and absent (null counts as absent).
    pub fn get(&mut self, key: &str, required: bool) -> Option<&'a Value> {
        match self.obj.get(key).filter(|v| !v.is_null()) {
            Some(v) => Some(v),
            None => {
                if required {
                    self.violation("", format!("required key [{key}] not found"));
                }
                None
            }
        }
    }

    /// A string member.
    pub fn string(&mut self, key: &str, required: bool) -> Option<&'a str> {
        let v = self.get(key, required)?;
        match v.as_str() {
            Some(s) => Some(s),
            None => self.wrong_type(key, "String", v),
        }
    }

    /// A number member within `min..=max`.
    pub fn number(&mut self, key: &str, min: f64, max: f64) -> Option<f32> {
        let v = self.get(key, false)?;
        let Some(n) = v.as_f64() else {
            return self.wrong_type(key, "Number", v);
        };
        if n < min {
            self.violation(key, format!("{n} is not greater or equal to {min}"));
            None
        } else if n > max {
            self.violation(key, format!("{n} is not less or equal to {max}"));
            None
        } else {
            Some(n as f32)
        }
    }

    /// An integer member within `min..=max`.
    pub fn integer(&mut self, key: &str, min: u64, max: u64) -> Option<usize> {
        let v = self.get(key, false)?;
        let Some(n) = v.as_i64() else {
            return self.wrong_type(key, "Integer", v);
        };
        if n < min as i64 {
            self.violation(key, format!("{n} is not greater or equal to {min}"));
            None
        } else if n as u64 > max {
            self.violation(key, format!("{n} is not less or equal to {max}"));
            None
        } else {
            usize::try_from(n).ok()
        }
    }

    /// An array of strings with at most `max_items` items.
    pub fn strings(&mut self, key: &str, max_items: usize) -> Vec<String> {
        let Some(v) = self.get(key, false) else {
            return Vec::new();
        };
        let Some(items) = v.as_array() else {
            self.wrong_type::<()>(key, "JSONArray", v);
            return Vec::new();
        };
        if items.len() > max_items {
            self.violation(
                key,
                format!(
                    "expected maximum item count: {max_items}, found: {}",
                    items.len()
                ),
            );
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self
                    .wrong_type::<()>(&format!("{key}/{i}"), "String", item)
                    .unwrap_or(()),
            }
        }
        out
    }

    /// An object member, for reading with its own reader.
    pub fn object(&mut self, key: &str, required: bool) -> Option<&'a Map<String, Value>> {
        let v = self.get(key, required)?;
        match v.as_object() {
            Some(o) => Some(o),
            None => self.wrong_type(key, "JSONObject", v),
        }
    }

    /// Adds a nested reader's violations to this one's.
    pub fn absorb(&mut self, nested: ObjectReader<'_>) {
        self.violations.extend(nested.violations);
    }

    /// This object's path, for nested readers.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn wrong_type<T>(&mut self, key: &str, expected: &str, found: &Value) -> Option<T> {
        self.violation(
            key,
            format!("expected type: {expected}, found: {}", type_name(found)),
        );
        None
    }

    /// `Ok` when nothing was flagged, else the combined ValidationException.
    pub fn finish(self) -> Result<(), BedrockError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(malformed(&self.violations))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn violations_concatenate_in_bedrock_style() {
        let body = obj(json!({"max_tokens": 5}));
        let mut r = ObjectReader::new(&body, "#");
        r.string("prompt", true);
        r.only(&["prompt"]);
        let err = r.finish().expect_err("invalid");
        assert_eq!(
            err.message,
            "Malformed input request: #: required key [prompt] not found#: extraneous key [max_tokens] is not permitted, please reformat your input and try again."
        );
    }

    #[test]
    fn types_and_ranges_are_checked() {
        let body = obj(json!({"prompt": 1, "temperature": 5, "max_gen_len": 0, "stop": ["a", 2]}));
        let mut r = ObjectReader::new(&body, "#");
        assert_eq!(r.string("prompt", true), None);
        assert_eq!(r.number("temperature", 0.0, 1.0), None);
        assert_eq!(r.integer("max_gen_len", 1, 2048), None);
        assert_eq!(r.strings("stop", 10), vec!["a".to_string()]);
        let msg = r.finish().expect_err("invalid").message;
        for part in [
            "#/prompt: expected type: String, found: Integer",
            "#/temperature: 5 is not less or equal to 1",
            "#/max_gen_len: 0 is not greater or equal to 1",
            "#/stop/1: expected type: String, found: Integer",
        ] {
            assert!(msg.contains(part), "{msg} lacks {part}");
        }
    }

    #[test]
    fn non_objects_and_bad_json_are_rejected() {
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{").is_err());
        assert!(parse_object(b"{}").is_ok());
    }
}
