//! A model the service answers for: its ids, the engine running it, and the
//! tokenizer and chat template that turn Bedrock prompts into tokens.

use std::sync::{Arc, OnceLock};

use factory_engine::{EngineHandle, GenerateRequest, SamplingParams};
use factory_models::chat_template::ChatTemplate;
use factory_models::tokenizer::Tokenizer;

use crate::bedrock::BedrockError;
use crate::model_id::{base_model_id, Family};
use crate::model_limits::ModelLimits;
use crate::prompt::{Generation, Invocation, Prompt, Role, Turn};
use crate::tools::template::{probe, render_conversation, ToolSupport};
use crate::tools::{Forced, ToolConfig};

/// One served model.
#[derive(Clone)]
pub struct ServedModel {
    /// The id clients use, e.g. `smollm2-135m-instruct`.
    pub id: String,
    /// More ids that reach this model, e.g. `meta.llama3-1-8b-instruct-v1:0`.
    pub aliases: Vec<String>,
    /// The InvokeModel body family for ids without a known provider prefix.
    pub default_family: Family,
    /// The running engine.
    pub engine: EngineHandle,
    /// The model's tokenizer, for prompts and token counts.
    pub tokenizer: Arc<Tokenizer>,
    /// The model's chat template; `None` for base models (chat APIs then fail).
    pub chat_template: Option<Arc<ChatTemplate>>,
    /// What requests may ask of this model.
    pub limits: ModelLimits,
    /// What the chat template does with tools, probed on first use.
    tool_support: Arc<OnceLock<ToolSupport>>,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("id", &self.id)
            .field("aliases", &self.aliases)
            .field("default_family", &self.default_family)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ServedModel {
    /// A model served under `id` with no aliases and Anthropic Messages bodies by default.
    pub fn new(
        id: impl Into<String>,
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        chat_template: Option<Arc<ChatTemplate>>,
    ) -> Self {
        Self {
            id: id.into(),
            aliases: Vec::new(),
            default_family: Family::Anthropic,
            engine,
            tokenizer,
            chat_template,
            limits: ModelLimits::default(),
            tool_support: Arc::new(OnceLock::new()),
        }
    }

    /// What the chat template does with tools (probed once).
    pub fn tool_support(&self) -> ToolSupport {
        *self.tool_support.get_or_init(|| match &self.chat_template {
            Some(t) => probe(t),
            None => ToolSupport::GENERIC,
        })
    }

    /// Whether `requested` (a bare id, profile id or ARN, already percent-decoded)
    /// names this model.
    pub fn answers_to(&self, requested: &str) -> bool {
        names(&self.id, &self.aliases, requested)
    }

    /// Generation requests this model holds at once: the engine's running
    /// sequences plus [`ModelLimits::max_queued_requests`] waiting.
    pub fn max_requests(&self) -> usize {
        self.engine
            .max_running()
            .saturating_add(self.limits.max_queued_requests)
    }

    /// The native body family for a request addressed as `requested`.
    pub fn family_for(&self, requested: &str) -> Family {
        Family::from_model_id(requested).unwrap_or(self.default_family)
    }

    /// The prompt's token ids, exactly as generation would see them.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, BedrockError> {
        let ids = match prompt {
            Prompt::Text {
                text,
                add_special_tokens,
            } => self.tokenizer.encode(text, *add_special_tokens),
            Prompt::Chat {
                system,
                turns,
                tools,
            } => {
                let text = self.render_chat(system.as_deref(), turns, tools.as_ref())?;
                // Templates write their own special tokens.
                self.tokenizer.encode(&text, false)
            }
        };
        ids.map_err(|e| BedrockError::validation(format!("The prompt cannot be tokenized: {e}")))
    }

    fn render_chat(
        &self,
        system: Option<&str>,
        turns: &[Turn],
        tools: Option<&ToolConfig>,
    ) -> Result<String, BedrockError> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            BedrockError::validation("This model has no chat template, so it cannot take messages.")
        })?;
        // A trailing assistant turn is a prefill: render the rest with the
        // assistant opener, then continue its text.
        let (turns, prefill) = match turns.split_last() {
            Some((last, rest)) if last.role == Role::Assistant => (rest, last.text.as_str()),
            _ => (turns, ""),
        };
        let support = self.tool_support();
        let mut text = render_conversation(template, support, system, turns, tools)
            .map_err(|e| BedrockError::validation(format!("The chat template failed: {e}")))?;
        text.push_str(prefill);
        // A forced call is prefilled up to its arguments (or its name, when
        // the model picks among several tools), so even a small model calls.
        match tools.map(ToolConfig::forced) {
            Some(Forced::Tool(name)) => text.push_str(&support.format.opener(Some(name))),
            Some(Forced::Pick) => text.push_str(&support.format.opener(None)),
            Some(Forced::No) | None => {}
        }
        Ok(text)
    }

    /// The engine request for `invocation`, with `default_max_tokens` when it names none.
    pub fn generate_request(
        &self,
        invocation: &Invocation,
        default_max_tokens: usize,
    ) -> Result<GenerateRequest, BedrockError> {
        let g: &Generation = &invocation.generation;
        let max_tokens = match g.max_tokens {
            Some(n) => {
                self.limits.check_max_tokens(n)?;
                n
            }
            None => default_max_tokens.min(self.limits.max_max_tokens.unwrap_or(usize::MAX)),
        };
        let prompt = self.encode(&invocation.prompt)?;
        self.limits.check_prompt(prompt.len())?;
        let mut req = GenerateRequest::new(prompt, max_tokens);
        let mut temperature = g.temperature.unwrap_or(0.0);
        let mut top_p = g.top_p.unwrap_or(1.0);
        // Bedrock allows top_p 0; the sampler needs it positive: both mean "most likely token".
        if top_p <= 0.0 {
            temperature = 0.0;
            top_p = 1.0;
        }
        req.sampling = SamplingParams {
            temperature,
            top_p,
            top_k: g.top_k.unwrap_or(0),
            ..SamplingParams::default()
        };
        let x = g.extra;
        let s = &mut req.sampling;
        s.min_p = x.min_p.unwrap_or(s.min_p);
        s.seed = x.seed.or(s.seed);
        s.repetition_penalty = x.repetition_penalty.unwrap_or(s.repetition_penalty);
        s.presence_penalty = x.presence_penalty.unwrap_or(s.presence_penalty);
        s.frequency_penalty = x.frequency_penalty.unwrap_or(s.frequency_penalty);
        req.stop_strings = g.stop_sequences.clone();
        Ok(req)
    }
}

/// Whether `requested` (a bare id, profile id or ARN, already percent-decoded)
/// names the model called `id` or one of its `aliases`.
pub fn names(id: &str, aliases: &[String], requested: &str) -> bool {
    let base = base_model_id(requested);
    std::iter::once(id)
        .chain(aliases.iter().map(String::as_str))
        .any(|id| id == requested || id == base)
}
