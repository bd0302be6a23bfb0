//! Tool use, whatever the API: the tools a request offers, the calls and
//! results in its history, rendering them through the chat template
//! ([`template`]), and finding the model's calls in what it generates
//! ([`parse`] for whole texts, [`output`] for streams).
//!
//! The APIs (Converse, Anthropic Messages, Nova) only translate their wire
//! shapes to and from these types.

mod auto;
pub mod blocks;
pub mod json_prefix;
pub mod output;
pub mod parse;
pub mod template;

use serde_json::{json, Value};

/// One tool the caller offers.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name, unique within the request.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// JSON Schema of its input object.
    pub input_schema: Value,
}

impl ToolSpec {
    /// The OpenAI / transformers form chat templates take as `tools`.
    pub fn as_template_tool(&self) -> Value {
        let mut function = json!({"name": self.name});
        if let Some(d) = &self.description {
            function["description"] = json!(d);
        }
        function["parameters"] = self.input_schema.clone();
        json!({"type": "function", "function": function})
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must call one of the tools.
    Any,
    /// The model must call this tool.
    Tool(String),
    /// The model must not call tools (Anthropic's `none`): tools are not
    /// offered and calls in the output stay text.
    None,
}

/// The tools of a request and the choice among them.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConfig {
    /// The tools; may be empty only where the API allows (history without new calls).
    pub tools: Vec<ToolSpec>,
    /// What the model may or must do with them.
    pub choice: ToolChoice,
    /// Stop after the first call (Anthropic's `disable_parallel_tool_use`).
    pub single_call: bool,
}

impl ToolConfig {
    /// The tool named `name`.
    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// Whether the prompt offers the tools (not with `none` or without tools).
    pub fn offers_tools(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// The call the choice forces: `any` with a single tool is that tool.
    pub fn forced(&self) -> Forced<'_> {
        match &self.choice {
            ToolChoice::Tool(name) => Forced::Tool(name),
            ToolChoice::Any if self.tools.len() == 1 => Forced::Tool(&self.tools[0].name),
            ToolChoice::Any if !self.tools.is_empty() => Forced::Pick,
            _ => Forced::No,
        }
    }
}

/// What a tool choice makes the prompt's prefill force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced<'a> {
    /// Nothing: the model decides (or may not call).
    No,
    /// A call of this tool: the prefill opens it up to its arguments.
    Tool(&'a str),
    /// A call of one of several tools: the prefill opens it up to the name.
    Pick,
}

/// The tool a generated name picks: the tool of that name, else the first
/// whose name starts with it, else the one sharing the longest prefix with
/// it (the first listed on ties). Deterministic, so `any` always calls a tool.
pub fn pick_tool<'a>(tools: &'a [ToolSpec], generated: &str) -> Option<&'a ToolSpec> {
    let g = generated.trim();
    tools
        .iter()
        .find(|t| t.name == g)
        .or_else(|| {
            tools
                .iter()
                .find(|t| !g.is_empty() && t.name.starts_with(g))
        })
        .or_else(|| {
            let common = |t: &ToolSpec| {
                t.name
                    .bytes()
                    .zip(g.bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            // max_by_key keeps the last maximum; reverse so the first listed wins.
            tools.iter().rev().max_by_key(|t| common(t))
        })
}

/// A call of a tool, in the history or generated.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The id results refer to.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its input (a JSON object).
    pub input: Value,
}

/// The result of an earlier call, sent back by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call's id.
    pub tool_use_id: String,
    /// The result as text (JSON results serialized).
    pub content: String,
    /// The tool failed; `content` says why.
    pub is_error: bool,
}

/// The shape of generated call ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStyle {
    /// Converse / Nova: `tooluse_` + 22 characters, as Bedrock.
    Converse,
    /// Anthropic Messages on Bedrock: `toolu_bdrk_01` + 22 characters.
    Anthropic,
}

impl IdStyle {
    /// A fresh random call id.
    pub fn new_id(self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (prefix, alphabet) = match self {
            IdStyle::Converse => ("tooluse_", URL_SAFE),
            IdStyle::Anthropic => ("toolu_bdrk_01", ALPHABET),
        };
        let mut id = String::with_capacity(prefix.len() + 22);
        id.push_str(prefix);
        for _ in 0..22 {
            let i = rand::random_range(0..alphabet.len());
            id.push(char::from(alphabet[i]));
        }
        id
    }
}

/// Whether `name` is a valid Converse tool name (`[a-zA-Z0-9_-]{1,64}`).
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_bedrocks() {
        let a = IdStyle::Converse.new_id();
        assert!(a.starts_with("tooluse_") && a.len() == 30, "{a}");
        assert!(a[8..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, IdStyle::Converse.new_id());
        let b = IdStyle::Anthropic.new_id();
        assert!(b.starts_with("toolu_bdrk_01") && b.len() == 35, "{b}");
        assert!(b[13..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn generated_names_pick_a_tool_deterministically() {
        let tools: Vec<ToolSpec> = ["get_weather", "get_time", "search"]
            .iter()
            .map(|n| ToolSpec {
                name: n.to_string(),
                description: None,
                input_schema: json!({"type": "object"}),
            })
            .collect();
        let pick = |g: &str| pick_tool(&tools, g).map(|t| t.name.as_str());
        assert_eq!(pick("get_time"), Some("get_time"));
        assert_eq!(pick("sea"), Some("search"));
        assert_eq!(pick("get_"), Some("get_weather"));
        assert_eq!(pick("get_tomorrow"), Some("get_time"));
        assert_eq!(pick(""), Some("get_weather"));
        assert_eq!(pick("zzz"), Some("get_weather"));
        assert_eq!(pick_tool(&[], "x"), None);
    }

    #[test]
    fn tool_names_follow_the_converse_pattern() {
        assert!(valid_tool_name("get_weather-2"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("get weather"));
        assert!(!valid_tool_name(&"a".repeat(65)));
    }
}
