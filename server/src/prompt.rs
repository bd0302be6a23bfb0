//! What a Bedrock body asks for, whatever its API: a prompt (chat turns or raw
//! text) and generation settings; turned into an engine request by `ServedModel`.

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

/// One conversation turn, its content blocks already joined into text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
}

/// The input to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A conversation rendered through the model's chat template.
    Chat {
        /// System instructions, possibly empty.
        system: Option<String>,
        /// Turns in order; a trailing assistant turn is continued (prefill).
        turns: Vec<Turn>,
    },
    /// Text fed as is (Llama/Mistral bodies carry an already-templated prompt).
    Text {
        /// The text.
        text: String,
        /// Whether the tokenizer adds its special tokens (BOS) itself.
        add_special_tokens: bool,
    },
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
}

/// A parsed request: prompt plus settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// What to continue.
    pub prompt: Prompt,
    /// How.
    pub generation: Generation,
}
