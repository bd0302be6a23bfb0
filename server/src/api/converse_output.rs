//! Converse and ConverseStream output (reference/bedrock-api.md 5.2-5.4).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Value};

use super::generation::Completion;
use super::stream::{StreamEncoder, StreamEvent, Timing};

/// Converse's `stopReason` for an engine stop reason.
pub fn stop_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::StopSequence(_) => "stop_sequence",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ContextLength => "model_context_window_exceeded",
    }
}

/// Converse's `usage` object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "inputTokens": usage.prompt_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.prompt_tokens + usage.output_tokens,
    })
}

/// The Converse response body.
pub fn response(c: &Completion) -> Value {
    json!({
        "output": {"message": {"role": "assistant", "content": [{"text": c.text}]}},
        "stopReason": stop_reason(&c.reason),
        "usage": usage_json(&c.usage),
        "metrics": {"latencyMs": c.latency_ms},
    })
}

/// ConverseStream's events in Bedrock's order: `messageStart`, text deltas (no
/// `contentBlockStart` for text), `contentBlockStop`, `messageStop`, `metadata`.
/// `wrap` puts each event inside a chunk named after it, as Nova's native stream does.
#[derive(Debug, Default)]
pub struct ConverseEncoder {
    wrap_in_chunks: bool,
    sent_delta: bool,
}

impl ConverseEncoder {
    /// Events as ConverseStream frames.
    pub fn frames() -> Self {
        Self::default()
    }

    /// Events as `{"<event>": {...}}` chunks (Nova InvokeModelWithResponseStream).
    pub fn chunks() -> Self {
        Self {
            wrap_in_chunks: true,
            sent_delta: false,
        }
    }

    fn event(&self, kind: &'static str, payload: Value) -> StreamEvent {
        if self.wrap_in_chunks {
            StreamEvent::Chunk(json!({ kind: payload }))
        } else {
            StreamEvent::Converse(kind, payload)
        }
    }

    fn delta(&mut self, text: &str) -> StreamEvent {
        self.sent_delta = true;
        self.event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": text}}),
        )
    }
}

impl StreamEncoder for ConverseEncoder {
    fn start(&mut self) -> Vec<StreamEvent> {
        vec![self.event("messageStart", json!({"role": "assistant"}))]
    }

    fn text(&mut self, text: &str, _output_tokens: usize) -> Vec<StreamEvent> {
        vec![self.delta(text)]
    }

    fn finish(&mut self, reason: &StopReason, usage: &Usage, timing: Timing) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        // Every block ends with contentBlockStop; an empty reply still has block 0.
        if !self.sent_delta {
            events.push(self.delta(""));
        }
        events.push(self.event("contentBlockStop", json!({"contentBlockIndex": 0})));
        events.push(self.event("messageStop", json!({"stopReason": stop_reason(reason)})));
        events.push(self.event(
            "metadata",
            json!({"usage": usage_json(usage), "metrics": {"latencyMs": timing.latency_ms}}),
        ));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_follow_bedrock_order() {
        let mut e = ConverseEncoder::frames();
        let mut kinds = Vec::new();
        let usage = Usage {
            prompt_tokens: 3,
            output_tokens: 2,
            ..Usage::default()
        };
        let timing = Timing {
            latency_ms: 5,
            first_token_ms: 1,
        };
        let all = [
            e.start(),
            e.text("Hi", 1),
            e.finish(&StopReason::MaxTokens, &usage, timing),
        ];
        for ev in all.into_iter().flatten() {
            if let StreamEvent::Converse(kind, payload) = ev {
                kinds.push(kind);
                if kind == "metadata" {
                    assert_eq!(payload["usage"]["totalTokens"], 5);
                }
                if kind == "messageStop" {
                    assert_eq!(payload["stopReason"], "max_tokens");
                }
            }
        }
        assert_eq!(
            kinds,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
    }
}
