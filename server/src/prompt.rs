//! What a Bedrock body asks for, whatever its API: a prompt (chat turns or raw
//! text) and generation settings; turned into an engine request by `ServedModel`.

use crate::tools::{ToolCall, ToolConfig, ToolResult};

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The caller.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role name chat templates expect.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One conversation turn: its text blocks joined, and its tool blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// Tools the assistant called in this turn (assistant turns).
    pub tool_calls: Vec<ToolCall>,
    /// Results of the previous turn's calls (user turns); they come before `text`.
    pub tool_results: Vec<ToolResult>,
}

impl Turn {
    /// A turn of plain text.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
            tool_calls: Vec::new(),
            tool_results: Vec::new(),
        }
    }
}

/// The input to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation rendered through the model's chat template.
    Chat {
        /// System instructions, possibly empty.
        system: Option<String>,
        /// Turns in order; a trailing assistant turn is continued (prefill).
        turns: Vec<Turn>,
        /// Tools offered, and the choice among them.
        tools: Option<ToolConfig>,
    },
    /// Text fed as is (Llama/Mistral bodies carry an already-templated prompt).
    Text {
        /// The text.
        text: String,
        /// Whether the tokenizer adds its special tokens (BOS) itself.
        add_special_tokens: bool,
    },
}

impl Prompt {
    /// The request's tools, if it has any.
    pub fn tools(&self) -> Option<&ToolConfig> {
        match self {
            Prompt::Chat { tools, .. } => tools.as_ref(),
            Prompt::Text { .. } => None,
        }
    }
}

/// Generation settings; `None` takes the server's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// 0..=1 as Bedrock allows; 0 is greedy.
    pub temperature: Option<f32>,
    /// 0..=1; 0 is treated as greedy.
    pub top_p: Option<f32>,
    /// Top-k cut; 0 is none.
    pub top_k: Option<usize>,
    /// Strings that end generation.
    pub stop_sequences: Vec<String>,
    /// Model-native extras from `additionalModelRequestFields` (vLLM's names).
    pub extra: ExtraSampling,
}

/// Sampling settings beyond Bedrock's common ones; `None` is the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExtraSampling {
    /// Tokens below this fraction of the top token's probability are cut.
    pub min_p: Option<f32>,
    /// Seed of the request's random draws.
    pub seed: Option<u64>,
    /// Multiplicative penalty on tokens already seen (1 is none).
    pub repetition_penalty: Option<f32>,
    /// Subtracted once from tokens already generated.
    pub presence_penalty: Option<f32>,
    /// Subtracted per occurrence of a generated token.
    pub frequency_penalty: Option<f32>,
}

/// A parsed request: prompt plus settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// What to continue.
    pub prompt: Prompt,
    /// How.
    pub generation: Generation,
}
