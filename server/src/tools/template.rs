//! Tools, calls and results through a model's chat template.
//!
//! Templates that know tools (Qwen, Hermes, Llama 3.1, Mistral...) get them
//! as transformers passes them: `tools` in the OpenAI form, assistant
//! `tool_calls` and `tool` role messages. Many templates ignore all of that
//! (the default SmolLM2 one does); for those the tools go into the system
//! prompt as a generic section (below) that asks for Hermes-style
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` answers, past
//! calls are written in the assistant's text in that same form, and results
//! go into the user's turn as `<tool_response>...</tool_response>`.
//!
//! What a template supports is found once per template by rendering probe
//! conversations ([`probe`]): with and without a sentinel tool (does the
//! output change and name it?), with a sentinel call, with a sentinel result.
//! The form the model is asked to call in ([`CallFormat`]) follows from what
//! the template prints: `<tool_call>` (Hermes), `[AVAILABLE_TOOLS]`
//! (Mistral), else a bare JSON object (Llama 3.1).

use std::collections::HashMap;

use factory_models::chat_template::{ChatTemplate, ChatTemplateError};
use serde_json::{json, Value};

use super::{ToolCall, ToolConfig, ToolResult};
use crate::prompt::{Role, Turn};

/// The form a model writes its calls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFormat {
    /// `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` (also the generic form).
    Hermes,
    /// A bare `{"name": ..., "parameters": ...}` object (Llama 3.1).
    JsonObject,
    /// `[TOOL_CALLS][{"name": ..., "arguments": ...}]`.
    Mistral,
}

impl CallFormat {
    /// The text that opens a call of `name` up to its arguments object; with
    /// `None`, up to the first character of the name (to let the model pick).
    pub fn opener(self, name: Option<&str>) -> String {
        let (head, key) = match self {
            CallFormat::Hermes => ("<tool_call>\n{\"name\": \"", "arguments"),
            CallFormat::JsonObject => ("{\"name\": \"", "parameters"),
            CallFormat::Mistral => ("[TOOL_CALLS][{\"name\": \"", "arguments"),
        };
        match name {
            // Names are `[a-zA-Z0-9_-]+` (validated), so they need no escaping.
            Some(n) => format!("{head}{n}\", \"{key}\": "),
            None => head.to_string(),
        }
    }

    /// Past calls written the way the model is asked to write them.
    pub fn write_calls(self, calls: &[ToolCall]) -> String {
        let call = |c: &ToolCall, key: &str| {
            format!(
                "{{\"name\": {}, \"{key}\": {}}}",
                python_json(&json!(c.name)),
                python_json(&c.input)
            )
        };
        match self {
            CallFormat::Hermes => calls
                .iter()
                .map(|c| format!("<tool_call>\n{}\n</tool_call>", call(c, "arguments")))
                .collect::<Vec<_>>()
                .join("\n"),
            CallFormat::JsonObject => calls
                .iter()
                .map(|c| call(c, "parameters"))
                .collect::<Vec<_>>()
                .join("\n"),
            CallFormat::Mistral => format!(
                "[TOOL_CALLS][{}]",
                calls
                    .iter()
                    .map(|c| call(c, "arguments"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What a chat template does with tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSupport {
    /// The template renders `tools` itself (else: the generic system section).
    pub native_tools: bool,
    /// The template renders assistant `tool_calls` (else: calls as text).
    pub native_calls: bool,
    /// The template renders `tool` role messages (else: results as user text).
    pub native_results: bool,
    /// How the model is asked to write calls.
    pub format: CallFormat,
}

impl ToolSupport {
    /// A template that knows nothing of tools: everything as text, Hermes form.
    pub const GENERIC: ToolSupport = ToolSupport {
        native_tools: false,
        native_calls: false,
        native_results: false,
        format: CallFormat::Hermes,
    };
}

const PROBE_TOOL: &str = "factory_probe_tool";
const PROBE_CALL_ID: &str = "probe0001"; // nine alphanumerics, as Mistral's templates demand
const PROBE_RESULT: &str = "factory_probe_result";

/// Finds what `template` does with tools by rendering probe conversations.
pub fn probe(template: &ChatTemplate) -> ToolSupport {
    let user = json!({"role": "user", "content": "What is the probe value?"});
    let tools = [json!({"type": "function", "function": {
        "name": PROBE_TOOL,
        "description": "Returns the probe value.",
        "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
    }})];
    let plain = template.render(std::slice::from_ref(&user), true, None);
    let with_tools = template.render(std::slice::from_ref(&user), true, Some(&tools));
    let rendered = match (plain, with_tools) {
        (Ok(p), Ok(w)) if p != w && w.contains(PROBE_TOOL) => w,
        _ => return ToolSupport::GENERIC,
    };
    let format = if rendered.contains("[AVAILABLE_TOOLS]") {
        CallFormat::Mistral
    } else if rendered.contains("<tool_call>") {
        CallFormat::Hermes
    } else {
        CallFormat::JsonObject
    };
    let call = json!({"role": "assistant", "content": "", "tool_calls": [{
        "id": PROBE_CALL_ID, "type": "function",
        "function": {"name": PROBE_TOOL, "arguments": {"key": "factory_probe_argument"}},
    }]});
    let native_calls = template
        .render(&[user.clone(), call.clone()], false, Some(&tools))
        .is_ok_and(|s| s.contains("factory_probe_argument"));
    let result = json!({"role": "tool", "tool_call_id": PROBE_CALL_ID, "name": PROBE_TOOL,
                        "content": PROBE_RESULT});
    let native_results = native_calls
        && template
            .render(&[user, call, result], true, Some(&tools))
            .is_ok_and(|s| s.contains(PROBE_RESULT));
    ToolSupport {
        native_tools: true,
        native_calls,
        native_results,
        format,
    }
}

/// The generic tools section of the system prompt, for templates that
/// ignore `tools`: the tools as JSON and how to call them (Hermes form).
pub fn generic_tools_section(config: &ToolConfig) -> String {
    let mut s = String::from(
        "# Tools\n\nYou can call functions to help answer. Each is described by a JSON object \
         between <tools> and </tools>:\n<tools>\n",
    );
    for t in &config.tools {
        s.push_str(&python_json(&t.as_template_tool()));
        s.push('\n');
    }
    s.push_str(
        "</tools>\n\nTo call a function, answer with a JSON object holding its name and its \
         arguments between <tool_call> and </tool_call>, one block per call:\n<tool_call>\n\
         {\"name\": \"function_name\", \"arguments\": {\"argument_name\": \"value\"}}\n</tool_call>",
    );
    s
}

/// Renders a conversation with its tools through `template`, with the
/// assistant opener at the end. A template that fails on the native call
/// or result messages is tried again with them written as text.
pub fn render_conversation(
    template: &ChatTemplate,
    support: ToolSupport,
    system: Option<&str>,
    turns: &[Turn],
    tools: Option<&ToolConfig>,
) -> Result<String, ChatTemplateError> {
    let offered = tools.filter(|t| t.offers_tools());
    if !support.native_tools {
        let section = offered.map(generic_tools_section);
        let system = match (system, section) {
            (Some(s), Some(t)) => Some(format!("{s}\n\n{t}")),
            (s, t) => s.map(str::to_string).or(t),
        };
        let messages = messages(system.as_deref(), turns, ToolSupport::GENERIC);
        return template.render(&messages, true, None);
    }
    let tool_values: Vec<Value> = offered
        .map(|c| c.tools.iter().map(|t| t.as_template_tool()).collect())
        .unwrap_or_default();
    let tools_arg = (!tool_values.is_empty()).then_some(tool_values.as_slice());
    let rendered = template.render(&messages(system, turns, support), true, tools_arg);
    match rendered {
        Err(_) if support.native_calls => {
            let as_text = ToolSupport {
                native_calls: false,
                native_results: false,
                ..support
            };
            template.render(&messages(system, turns, as_text), true, tools_arg)
        }
        other => other,
    }
}

/// The template messages for `turns`.
fn messages(system: Option<&str>, turns: &[Turn], support: ToolSupport) -> Vec<Value> {
    let names: HashMap<&str, &str> = turns
        .iter()
        .flat_map(|t| &t.tool_calls)
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect();
    let call_id = |id: &str| {
        if support.format == CallFormat::Mistral {
            mistral_id(id)
        } else {
            id.to_string()
        }
    };
    let mut out = Vec::with_capacity(turns.len() + 1);
    if let Some(s) = system {
        out.push(json!({"role": "system", "content": s}));
    }
    for t in turns {
        match t.role {
            Role::User => {
                let mut text = Vec::new();
                for r in &t.tool_results {
                    if support.native_results {
                        out.push(json!({
                            "role": "tool",
                            "tool_call_id": call_id(&r.tool_use_id),
                            "name": names.get(r.tool_use_id.as_str()).copied().unwrap_or_default(),
                            "content": result_text(r),
                        }));
                    } else {
                        text.push(format!(
                            "<tool_response>\n{}\n</tool_response>",
                            result_text(r)
                        ));
                    }
                }
                if !t.text.is_empty() {
                    text.push(t.text.clone());
                }
                if !text.is_empty() || t.tool_results.is_empty() {
                    out.push(json!({"role": "user", "content": text.join("\n")}));
                }
            }
            Role::Assistant if !t.tool_calls.is_empty() && support.native_calls => {
                let calls: Vec<Value> = t
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": call_id(&c.id), "type": "function",
                               "function": {"name": c.name, "arguments": c.input}})
                    })
                    .collect();
                out.push(json!({"role": "assistant", "content": t.text, "tool_calls": calls}));
            }
            Role::Assistant => {
                let mut text = t.text.clone();
                if !t.tool_calls.is_empty() {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&support.format.write_calls(&t.tool_calls));
                }
                out.push(json!({"role": "assistant", "content": text}));
            }
        }
    }
    out
}

/// A result as the model reads it.
fn result_text(r: &ToolResult) -> String {
    if r.is_error {
        format!("Error: {}", r.content)
    } else {
        r.content.clone()
    }
}

/// A nine-character alphanumeric id derived from `id` (Mistral's templates
/// accept no other), the same for a call and its result.
fn mistral_id(id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize];
            h /= ALPHABET.len() as u64;
            h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (h >> 29);
            char::from(c)
        })
        .collect()
}

/// JSON as Python's `json.dumps` writes it (`", "` and `": "` separators,
/// non-ASCII kept), the form chat templates and models are used to.
pub fn python_json(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{ToolChoice, ToolSpec};

    const SMOL_LIKE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    const QWEN_LIKE: &str = r#"{%- if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>
Use <tool_call></tool_call> tags.<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "user" or (message.role == "system" and not tools) or (message.role == "assistant" and not message.tool_calls) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == "assistant" %}<|im_start|>assistant
{{ message.content }}{% for tc in message.tool_calls %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

    fn template(src: &str) -> ChatTemplate {
        ChatTemplate::new(src, None, None).expect("template compiles")
    }

    fn weather() -> ToolConfig {
        ToolConfig {
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: Some("Weather for a city.".into()),
                input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            choice: ToolChoice::Auto,
            single_call: false,
        }
    }

    fn history() -> Vec<Turn> {
        vec![
            Turn::text(Role::User, "Weather in Paris?"),
            Turn {
                role: Role::Assistant,
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "tooluse_abc".into(),
                    name: "get_weather".into(),
                    input: json!({"city": "Paris"}),
                }],
                tool_results: Vec::new(),
            },
            Turn {
                role: Role::User,
                text: "Thanks".into(),
                tool_calls: Vec::new(),
                tool_results: vec![ToolResult {
                    tool_use_id: "tooluse_abc".into(),
                    content: "{\"temp\": 21}".into(),
                    is_error: false,
                }],
            },
        ]
    }

    #[test]
    fn templates_without_tools_get_the_generic_forms() {
        let t = template(SMOL_LIKE);
        let support = probe(&t);
        assert_eq!(support, ToolSupport::GENERIC);
        let out = render_conversation(&t, support, Some("Be brief."), &history(), Some(&weather()))
            .expect("renders");
        assert!(
            out.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"),
            "{out}"
        );
        assert!(out.contains(
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather for a city.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}"
        ), "{out}");
        assert!(out.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>"), "{out}");
        assert!(out.contains("<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\nThanks<|im_end|>"), "{out}");
        assert!(out.ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn tool_aware_templates_render_natively() {
        let t = template(QWEN_LIKE);
        let support = probe(&t);
        assert_eq!(
            support,
            ToolSupport {
                native_tools: true,
                native_calls: true,
                native_results: true,
                format: CallFormat::Hermes
            }
        );
        let out =
            render_conversation(&t, support, None, &history(), Some(&weather())).expect("renders");
        assert!(out.contains("<tools>{\"type\": \"function\""), "{out}");
        assert!(!out.contains("# Tools"), "{out}");
        assert!(out.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"), "{out}");
        assert!(out.contains("<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n<|im_start|>user\nThanks"), "{out}");
    }

    #[test]
    fn choice_none_offers_no_tools() {
        let t = template(SMOL_LIKE);
        let mut config = weather();
        config.choice = ToolChoice::None;
        let out = render_conversation(
            &t,
            ToolSupport::GENERIC,
            None,
            &history()[..1],
            Some(&config),
        )
        .expect("renders");
        assert!(!out.contains("# Tools"));
    }

    #[test]
    fn openers_and_written_calls_agree() {
        let call = ToolCall {
            id: "x".into(),
            name: "f".into(),
            input: json!({"a": [1, "é"]}),
        };
        for format in [
            CallFormat::Hermes,
            CallFormat::JsonObject,
            CallFormat::Mistral,
        ] {
            let written = format.write_calls(std::slice::from_ref(&call));
            assert!(written.starts_with(&format.opener(Some("f"))), "{written}");
            assert!(written.starts_with(&format.opener(None)), "{written}");
        }
        assert_eq!(
            python_json(&json!({"a": [1, "é"], "b": {}})),
            "{\"a\": [1, \"é\"], \"b\": {}}"
        );
    }

    #[test]
    fn mistral_ids_are_nine_stable_alphanumerics() {
        let a = mistral_id("tooluse_abc");
        assert_eq!(a.len(), 9);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a, mistral_id("tooluse_abc"));
        assert_ne!(a, mistral_id("tooluse_abd"));
    }
}
