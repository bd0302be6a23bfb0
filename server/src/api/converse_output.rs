//! Converse and ConverseStream output (reference/bedrock-api.md 5.2-5.4).

use factory_engine::{StopReason, Usage};
use serde_json::{json, Value};

use super::generation::Completion;
use super::stream::{StreamEncoder, StreamEvent, Timing};
use crate::tools::output::{Block, BlockEvent, BlockIndexer, Ending, OutputEvent, ToolOutput};

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

/// Converse's `stopReason` for a finished generation.
pub fn completion_stop_reason(c: &Completion) -> &'static str {
    if c.tool_use {
        "tool_use"
    } else {
        stop_reason(&c.reason)
    }
}

/// The Converse response body.
pub fn response(c: &Completion) -> Value {
    json!({
        "output": {"message": {"role": "assistant", "content": content_json(&c.content)}},
        "stopReason": completion_stop_reason(c),
        "usage": usage_json(&c.usage),
        "metrics": {"latencyMs": c.latency_ms},
    })
}

/// A Converse `content` array; never empty (an empty reply is one empty text block).
pub fn content_json(blocks: &[Block]) -> Value {
    let mut out: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"text": t}),
            Block::ToolUse(c) => {
                json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.input}})
            }
        })
        .collect();
    if out.is_empty() {
        out.push(json!({"text": ""}));
    }
    Value::Array(out)
}

/// ConverseStream's events in Bedrock's order: `messageStart`; per block,
/// `contentBlockStart` (tool use only: text blocks have none), deltas,
/// `contentBlockStop`; then `messageStop` and `metadata`. Chunk mode puts
/// each event inside a chunk named after it, as Nova's native stream does.
#[derive(Debug, Default)]
pub struct ConverseEncoder {
    wrap_in_chunks: bool,
    blocks: BlockIndexer,
    tools: Option<(ToolOutput, usize)>,
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
            ..Self::default()
        }
    }

    /// With tool calls read from the output (a request of `prompt_tokens` tokens).
    pub fn with_tools(mut self, output: Option<ToolOutput>, prompt_tokens: usize) -> Self {
        self.tools = output.map(|o| (o, prompt_tokens));
        self
    }

    fn event(&self, kind: &'static str, payload: Value) -> StreamEvent {
        if self.wrap_in_chunks {
            StreamEvent::Chunk(json!({ kind: payload }))
        } else {
            StreamEvent::Converse(kind, payload)
        }
    }

    fn events(&mut self, output: Vec<OutputEvent>) -> Vec<StreamEvent> {
        let blocks = self.blocks.map(output);
        self.block_events(blocks)
    }

    fn block_events(&self, blocks: Vec<BlockEvent>) -> Vec<StreamEvent> {
        blocks
            .into_iter()
            .filter_map(|b| match b {
                BlockEvent::Start {
                    index,
                    tool: Some((id, name)),
                } => Some(self.event(
                    "contentBlockStart",
                    json!({"contentBlockIndex": index,
                           "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                )),
                BlockEvent::Start { tool: None, .. } => None,
                BlockEvent::Text(index, text) => Some(self.event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"text": text}}),
                )),
                BlockEvent::Input(_, piece) if piece.is_empty() => None,
                BlockEvent::Input(index, piece) => Some(self.event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}),
                )),
                BlockEvent::Stop(index) => {
                    Some(self.event("contentBlockStop", json!({"contentBlockIndex": index})))
                }
            })
            .collect()
    }
}

impl StreamEncoder for ConverseEncoder {
    fn start(&mut self) -> Vec<StreamEvent> {
        let mut events = vec![self.event("messageStart", json!({"role": "assistant"}))];
        if let Some((output, _)) = &mut self.tools {
            let start = output.start();
            events.extend(self.events(start));
        }
        events
    }

    fn text(&mut self, text: &str, _output_tokens: usize) -> Vec<StreamEvent> {
        let output = match &mut self.tools {
            Some((output, _)) => output.push(text),
            None => vec![OutputEvent::Text(text.to_string())],
        };
        self.events(output)
    }

    fn finish(&mut self, reason: &StopReason, usage: &Usage, timing: Timing) -> Vec<StreamEvent> {
        let (rest, stop) = match &mut self.tools {
            Some((output, _)) => {
                let rest = output.finish();
                let stop = match output.ending(reason.clone()) {
                    Ending::ToolUse => "tool_use",
                    Ending::Engine(r) => stop_reason(&r),
                };
                (rest, stop)
            }
            None => (Vec::new(), stop_reason(reason)),
        };
        let mut events = self.events(rest);
        let closing = self.blocks.finish();
        events.extend(self.block_events(closing));
        events.push(self.event("messageStop", json!({"stopReason": stop})));
        events.push(self.event(
            "metadata",
            json!({"usage": usage_json(usage), "metrics": {"latencyMs": timing.latency_ms}}),
        ));
        events
    }

    fn stop_now(&self, output_tokens: usize) -> Option<Usage> {
        let (output, prompt_tokens) = self.tools.as_ref()?;
        output.is_complete().then_some(Usage {
            prompt_tokens: *prompt_tokens,
            output_tokens,
            cached_prompt_tokens: 0,
            ..Usage::default()
        })
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
