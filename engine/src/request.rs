//! What a caller submits and what it gets back.

use std::time::Duration;

use crate::sampling::{SamplingParams, TokenLogprobs};

/// One generation request, already tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Prompt token ids (chat template already applied).
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Most tokens to generate (at least 1).
    pub max_tokens: usize,
    /// Token ids that end generation besides the model's end-of-turn ids.
    pub stop_token_ids: Vec<u32>,
    /// Strings that end generation; the matched string is not emitted.
    pub stop_strings: Vec<String>,
    /// Keep generating past the model's end-of-turn tokens.
    pub ignore_eos: bool,
    /// Smaller runs sooner; 0 is normal. Waiting requests age, so a large
    /// value delays a request but never starves it.
    pub priority: i32,
    /// Report each token's log-probability with this many most likely
    /// alternatives (0..=[`crate::sampling::MAX_TOP_LOGPROBS`]); `None`
    /// computes nothing.
    pub logprobs: Option<usize>,
}

impl GenerateRequest {
    /// A greedy request for `prompt` with default settings.
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            max_tokens,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            priority: 0,
            logprobs: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-turn (or a requested stop) token.
    EndTurn,
    /// A stop string matched; it is the string.
    StopSequence(String),
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The sequence reached the model's context length.
    ContextLength,
}

impl StopReason {
    /// The Bedrock / Anthropic name of the reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::StopSequence(_) => "stop_sequence",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextLength => "length",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Generated tokens, including any that formed a stop string or the
    /// final end-of-turn token.
    pub output_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache.
    pub cached_prompt_tokens: usize,
    /// Time from submission to the first step that scheduled the request
    /// (what it spent waiting in the queue).
    pub queue_time: Duration,
}

/// What a request's stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
    /// A generated token and the text it completes (possibly empty: part of
    /// a character, a special token, or text held back as a possible start
    /// of a stop string), with its log-probabilities when the request asked.
    Token {
        id: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// The request ended normally; the last event of the stream.
    Finished { reason: StopReason, usage: Usage },
    /// The request failed; the last event of the stream.
    Error { message: String },
}
