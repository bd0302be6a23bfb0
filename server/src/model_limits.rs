//! Per-model request limits, checked before a request reaches the engine, with
//! Bedrock's own messages for the common ones.

use std::time::Duration;

use crate::bedrock::BedrockError;

/// What one model accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimits {
    /// Tokens generated when a request names no limit (`None`: the service's
    /// `default_max_tokens`).
    pub default_max_tokens: Option<usize>,
    /// The largest `maxTokens` (`max_tokens`, `max_gen_len`, ...) a request may
    /// ask; more is a ValidationException. `None`: only the context bounds it.
    pub max_max_tokens: Option<usize>,
    /// The longest prompt in tokens; longer is a ValidationException.
    /// `None`: only the context bounds it.
    pub max_prompt_tokens: Option<usize>,
    /// Generation requests that may wait in the engine's queue beside the
    /// `max_num_seqs` it runs; more get ThrottlingException (429).
    pub max_queued_requests: usize,
    /// How long one request may take (`None`: the service's `request_timeout`).
    pub request_timeout: Option<Duration>,
}

impl Default for ModelLimits {
    fn default() -> Self {
        Self {
            default_max_tokens: None,
            max_max_tokens: None,
            max_prompt_tokens: None,
            max_queued_requests: 256,
            request_timeout: None,
        }
    }
}

impl ModelLimits {
    /// Refuses a requested `max_tokens` above [`ModelLimits::max_max_tokens`].
    pub fn check_max_tokens(&self, requested: usize) -> Result<(), BedrockError> {
        match self.max_max_tokens {
            // Bedrock's wording, including its "lower than" for a limit that is allowed.
            Some(max) if requested > max => Err(BedrockError::validation(format!(
                "The maximum tokens you requested exceeds the model limit of {max}. Try again with a maximum tokens value that is lower than {max}."
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a prompt of `tokens` above [`ModelLimits::max_prompt_tokens`].
    pub fn check_prompt(&self, tokens: usize) -> Result<(), BedrockError> {
        match self.max_prompt_tokens {
            Some(max) if tokens > max => {
                tracing::info!("prompt of {tokens} tokens refused: the limit is {max}");
                Err(BedrockError::validation(
                    "Input is too long for requested model.",
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_only_beyond_the_maximum() {
        let l = ModelLimits {
            max_max_tokens: Some(100),
            max_prompt_tokens: Some(10),
            ..ModelLimits::default()
        };
        assert!(l.check_max_tokens(100).is_ok());
        let e = l.check_max_tokens(101).expect_err("too many");
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("model limit of 100"), "{}", e.message);
        assert!(l.check_prompt(10).is_ok());
        let e = l.check_prompt(11).expect_err("too long");
        assert_eq!(e.message, "Input is too long for requested model.");
        let open = ModelLimits::default();
        assert!(open.check_max_tokens(usize::MAX).is_ok());
        assert!(open.check_prompt(usize::MAX).is_ok());
    }
}
