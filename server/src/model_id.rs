//! Model identifiers as clients send them: bare ids, inference-profile ids and
//! ARNs (reference/bedrock-api.md 7), and the native body family an id selects (6).

/// Region prefixes of inference-profile ids (`us.meta.llama3-...`).
const PROFILE_PREFIXES: &[&str] = &[
    "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
];

/// The InvokeModel body schema a model id selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Meta Llama: `{"prompt", "max_gen_len", ...}`.
    Meta,
    /// Mistral text completion: `{"prompt", "max_tokens", "stop", ...}`.
    Mistral,
    /// Anthropic Messages: `{"anthropic_version", "messages", "max_tokens", ...}`.
    Anthropic,
    /// Amazon Titan Text: `{"inputText", "textGenerationConfig"}`.
    Titan,
    /// Amazon Nova: `{"schemaVersion": "messages-v1", "messages", "inferenceConfig"}`.
    Nova,
}

impl Family {
    /// The family Bedrock picks for `model_id` from its provider prefix, if any.
    pub fn from_model_id(model_id: &str) -> Option<Self> {
        let base = base_model_id(model_id);
        let (provider, rest) = base.split_once('.')?;
        match provider {
            "meta" => Some(Self::Meta),
            "mistral" => Some(Self::Mistral),
            "anthropic" => Some(Self::Anthropic),
            "amazon" if rest.starts_with("titan-text") => Some(Self::Titan),
            "amazon" if rest.starts_with("nova") => Some(Self::Nova),
            _ => None,
        }
    }
}

/// The foundation-model id inside `model_id`: the resource of an ARN, without an
/// inference-profile region prefix.
pub fn base_model_id(model_id: &str) -> &str {
    let resource = match model_id.strip_prefix("arn:") {
        // arn:partition:bedrock:region:account:type/resource
        Some(_) => model_id
            .split_once('/')
            .map_or(model_id, |(_, resource)| resource),
        None => model_id,
    };
    PROFILE_PREFIXES
        .iter()
        .find_map(|p| resource.strip_prefix(p))
        .unwrap_or(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_profiles_reduce_to_the_base_id() {
        let id = "meta.llama3-1-8b-instruct-v1:0";
        for sent in [
            id.to_string(),
            format!("us.{id}"),
            format!("arn:aws:bedrock:us-east-1::foundation-model/{id}"),
            format!("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{id}"),
        ] {
            assert_eq!(base_model_id(&sent), id, "{sent}");
        }
        assert_eq!(
            base_model_id("smollm2-135m-instruct"),
            "smollm2-135m-instruct"
        );
    }

    #[test]
    fn provider_prefix_picks_the_family() {
        let cases = [
            ("meta.llama3-8b-instruct-v1:0", Some(Family::Meta)),
            (
                "us.anthropic.claude-3-haiku-20240307-v1:0",
                Some(Family::Anthropic),
            ),
            ("mistral.mistral-7b-instruct-v0:2", Some(Family::Mistral)),
            ("amazon.titan-text-express-v1", Some(Family::Titan)),
            ("amazon.nova-lite-v1:0", Some(Family::Nova)),
            ("amazon.titan-embed-text-v2:0", None),
            ("cohere.command-r-v1:0", None),
            ("smollm2-135m-instruct", None),
        ];
        for (id, family) in cases {
            assert_eq!(Family::from_model_id(id), family, "{id}");
        }
    }
}
