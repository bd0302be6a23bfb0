//! A model the service is configured for, from before its weights load: its
//! ids (so requests for it can be told it is loading) and, once loaded, the
//! [`ServedModel`], or why it failed to load.

use std::sync::OnceLock;

use crate::served_model::{names, ServedModel};

/// Where a configured model stands.
#[derive(Debug, Clone, Copy)]
pub enum ModelState<'a> {
    /// Still loading: requests for it get ServiceUnavailableException.
    Loading,
    /// Serving.
    Ready(&'a ServedModel),
    /// Loading failed, for this reason; it will not come back without a restart.
    Failed(&'a str),
}

/// One configured model; its state changes once, from loading to ready or failed.
#[derive(Debug)]
pub struct ModelSlot {
    id: String,
    aliases: Vec<String>,
    state: OnceLock<Result<ServedModel, String>>,
}

impl ModelSlot {
    /// A model still loading, answering to `id` and `aliases`.
    pub fn loading(id: impl Into<String>, aliases: Vec<String>) -> Self {
        Self {
            id: id.into(),
            aliases,
            state: OnceLock::new(),
        }
    }

    /// A model already loaded.
    pub fn ready(model: ServedModel) -> Self {
        let slot = Self::loading(model.id.clone(), model.aliases.clone());
        slot.set_ready(model);
        slot
    }

    /// The primary id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The other ids.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    /// Whether `requested` (decoded; bare id, profile id or ARN) names this model.
    pub fn answers_to(&self, requested: &str) -> bool {
        names(&self.id, &self.aliases, requested)
    }

    /// The current state.
    pub fn state(&self) -> ModelState<'_> {
        match self.state.get() {
            None => ModelState::Loading,
            Some(Ok(model)) => ModelState::Ready(model),
            Some(Err(why)) => ModelState::Failed(why),
        }
    }

    /// The model, if it is ready.
    pub fn model(&self) -> Option<&ServedModel> {
        match self.state() {
            ModelState::Ready(m) => Some(m),
            _ => None,
        }
    }

    /// Marks the model loaded; its ids become the slot's. False if the state
    /// was already settled (it is then unchanged).
    pub fn set_ready(&self, mut model: ServedModel) -> bool {
        model.id.clone_from(&self.id);
        model.aliases.clone_from(&self.aliases);
        self.state.set(Ok(model)).is_ok()
    }

    /// Marks the model failed with `why`. False if the state was already settled.
    pub fn set_failed(&self, why: impl Into<String>) -> bool {
        self.state.set(Err(why.into())).is_ok()
    }
}
