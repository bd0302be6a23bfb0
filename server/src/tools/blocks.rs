//! Tool-aware output as content blocks: collected whole for non-streamed
//! responses ([`BlockCollector`]), or numbered for streams ([`BlockIndexer`]).

use serde_json::{Map, Value};

use super::output::OutputEvent;
use super::ToolCall;

/// A content block of a finished output.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// A tool call.
    ToolUse(ToolCall),
}

/// Collects events into blocks (for whole, non-streamed responses).
#[derive(Debug, Default)]
pub struct BlockCollector {
    blocks: Vec<Block>,
    input: Option<(String, String, String)>,
}

impl BlockCollector {
    /// Adds events.
    pub fn add(&mut self, events: Vec<OutputEvent>) {
        for ev in events {
            match ev {
                OutputEvent::Text(t) => match self.blocks.last_mut() {
                    Some(Block::Text(prev)) => prev.push_str(&t),
                    _ => self.blocks.push(Block::Text(t)),
                },
                OutputEvent::ToolStart { id, name } => self.input = Some((id, name, String::new())),
                OutputEvent::ToolInput(piece) => {
                    if let Some((_, _, json)) = &mut self.input {
                        json.push_str(&piece);
                    }
                }
                OutputEvent::ToolEnd => {
                    if let Some((id, name, json)) = self.input.take() {
                        let input = match serde_json::from_str::<Value>(&json) {
                            Ok(v @ Value::Object(_)) => v,
                            _ => {
                                // Unreachable by construction (forced inputs are closed, auto
                                // inputs are serialized objects); never fail the request for it.
                                tracing::warn!("tool input is not a JSON object: {json}");
                                Value::Object(Map::new())
                            }
                        };
                        self.blocks
                            .push(Block::ToolUse(ToolCall { id, name, input }));
                    }
                }
            }
        }
    }

    /// The blocks.
    pub fn into_blocks(self) -> Vec<Block> {
        self.blocks
    }
}

/// A content block's place in a streamed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockEvent {
    /// Block `index` starts: text, or a call.
    Start {
        /// Its index.
        index: usize,
        /// `None` for text; the call's id and name.
        tool: Option<(String, String)>,
    },
    /// Text appended to text block `index`.
    Text(usize, String),
    /// Input JSON appended to tool block `index`.
    Input(usize, String),
    /// Block `index` ends.
    Stop(usize),
}

/// Numbers blocks for streamed messages: text after a call opens a new
/// block, and every block is stopped.
#[derive(Debug, Default)]
pub struct BlockIndexer {
    next: usize,
    open: Option<(usize, bool)>,
}

impl BlockIndexer {
    /// Block events for output events.
    pub fn map(&mut self, events: Vec<OutputEvent>) -> Vec<BlockEvent> {
        let mut out = Vec::new();
        for ev in events {
            match ev {
                OutputEvent::Text(t) => {
                    let index = match self.open {
                        Some((i, false)) => i,
                        _ => {
                            self.close(&mut out);
                            let i = self.begin(false);
                            out.push(BlockEvent::Start {
                                index: i,
                                tool: None,
                            });
                            i
                        }
                    };
                    out.push(BlockEvent::Text(index, t));
                }
                OutputEvent::ToolStart { id, name } => {
                    self.close(&mut out);
                    let index = self.begin(true);
                    out.push(BlockEvent::Start {
                        index,
                        tool: Some((id, name)),
                    });
                }
                OutputEvent::ToolInput(piece) => {
                    if let Some((i, true)) = self.open {
                        out.push(BlockEvent::Input(i, piece));
                    }
                }
                OutputEvent::ToolEnd => self.close(&mut out),
            }
        }
        out
    }

    /// Closes the open block; an empty message still gets one (empty) text block.
    pub fn finish(&mut self) -> Vec<BlockEvent> {
        let mut out = Vec::new();
        if self.next == 0 {
            let index = self.begin(false);
            out.push(BlockEvent::Start { index, tool: None });
            out.push(BlockEvent::Text(index, String::new()));
        }
        self.close(&mut out);
        out
    }

    fn begin(&mut self, tool: bool) -> usize {
        let i = self.next;
        self.next += 1;
        self.open = Some((i, tool));
        i
    }

    fn close(&mut self, out: &mut Vec<BlockEvent>) {
        if let Some((i, _)) = self.open.take() {
            out.push(BlockEvent::Stop(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexer_numbers_blocks_and_closes_each() {
        let mut ix = BlockIndexer::default();
        let mut ev = ix.map(vec![
            OutputEvent::Text("a".into()),
            OutputEvent::ToolStart {
                id: "i".into(),
                name: "n".into(),
            },
            OutputEvent::ToolInput("{}".into()),
            OutputEvent::ToolEnd,
            OutputEvent::Text("b".into()),
        ]);
        ev.extend(ix.finish());
        assert_eq!(
            ev,
            vec![
                BlockEvent::Start {
                    index: 0,
                    tool: None
                },
                BlockEvent::Text(0, "a".into()),
                BlockEvent::Stop(0),
                BlockEvent::Start {
                    index: 1,
                    tool: Some(("i".into(), "n".into()))
                },
                BlockEvent::Input(1, "{}".into()),
                BlockEvent::Stop(1),
                BlockEvent::Start {
                    index: 2,
                    tool: None
                },
                BlockEvent::Text(2, "b".into()),
                BlockEvent::Stop(2),
            ]
        );
        let mut empty = BlockIndexer::default();
        assert_eq!(
            empty.finish(),
            vec![
                BlockEvent::Start {
                    index: 0,
                    tool: None
                },
                BlockEvent::Text(0, String::new()),
                BlockEvent::Stop(0)
            ]
        );
    }
}
