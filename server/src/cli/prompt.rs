//! Turning a user's text into prompt tokens: the chat template unless raw.

use anyhow::{bail, Context};
use factory_models::bundle::ModelBundle;

/// Prompt token ids for one user message (and an optional system message).
pub fn prompt_ids(
    bundle: &ModelBundle,
    system: Option<&str>,
    user: &str,
    raw: bool,
) -> anyhow::Result<Vec<u32>> {
    let tok = &bundle.tokenizer;
    let ids = if raw {
        tok.encode(user, true)?
    } else {
        let Some(template) = &bundle.chat_template else {
            bail!("this model has no chat template; use --raw to feed the prompt as is");
        };
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(("system", s));
        }
        messages.push(("user", user));
        let text = template
            .render_simple(&messages, true)
            .context("rendering the chat template")?;
        tracing::debug!("rendered prompt: {text:?}");
        // Templates write their own special tokens.
        tok.encode(&text, false)?
    };
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    Ok(ids)
}
