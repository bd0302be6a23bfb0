//! Generated text to content blocks, incrementally: text streams as text;
//! once a tool-call opener may be starting, text is held back until the call
//! closes (then it becomes a tool-use block) or turns out to be text.
//!
//! Two modes:
//! - *auto*: calls in any of the forms [`super::parse`] knows (Hermes
//!   `<tool_call>`, Mistral `[TOOL_CALLS]`, a whole-message JSON call) whose
//!   names are offered become tool-use blocks; everything else stays text.
//! - *forced* (`any` / `tool`): the prompt already ends with the call's
//!   opener and name, so the generated text *is* the arguments object. It is
//!   streamed as it is scanned ([`JsonPrefix`]) and closed deterministically:
//!   the block's input is always a JSON object (see [`ForcedCall`]).

use factory_engine::StopReason;
use serde_json::{Map, Value};

use super::json_prefix::{JsonPrefix, Scan};
use super::parse::{calls_in_json, FoundCall, HERMES_CLOSE, HERMES_OPEN, MISTRAL_OPEN};
use super::{IdStyle, ToolCall, ToolConfig};

/// One step of the output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// Text to append to the current text block.
    Text(String),
    /// A tool-use block starts.
    ToolStart {
        /// The new call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// A piece of the call's input JSON; the pieces concatenate to a JSON object.
    ToolInput(String),
    /// The tool-use block ends.
    ToolEnd,
}

/// Why the output ended, as the APIs report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The model produced tool calls for the caller to run.
    ToolUse,
    /// The engine's reason.
    Engine(StopReason),
}

/// Splits generated text into text and tool calls.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    names: Vec<String>,
    config: ToolConfig,
    ids: IdStyle,
    mode: Mode,
    calls: usize,
    done: bool,
}

#[derive(Debug, Clone)]
enum Mode {
    Auto(Auto),
    Forced(ForcedCall),
}

impl ToolOutput {
    /// Output for a request with `config` (auto mode unless `forced` names
    /// the tool whose arguments the prompt's prefill opened).
    pub fn new(config: &ToolConfig, ids: IdStyle, forced: Option<&str>) -> Self {
        let mode = match forced {
            Some(name) => Mode::Forced(ForcedCall::new(ids.new_id(), name)),
            None => Mode::Auto(Auto::default()),
        };
        Self {
            names: config.tools.iter().map(|t| t.name.clone()).collect(),
            config: config.clone(),
            ids,
            mode,
            calls: 0,
            done: false,
        }
    }

    /// The events to send before any text (a forced call's block start).
    pub fn start(&mut self) -> Vec<OutputEvent> {
        match &mut self.mode {
            Mode::Forced(f) => f.start(),
            Mode::Auto(_) => Vec::new(),
        }
    }

    /// Feeds generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<OutputEvent> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        match &mut self.mode {
            Mode::Forced(f) => {
                f.push(text, &mut out);
                if f.closed() {
                    self.calls = 1;
                    self.done = true;
                }
            }
            Mode::Auto(a) => {
                a.buf.push_str(text);
                let calls = a.drain(&self.config, self.ids, false, &mut out);
                self.calls += calls;
                if calls > 0 && self.config.single_call {
                    self.done = true;
                }
            }
        }
        out
    }

    /// Ends the output: held-back text, an unfinished call.
    pub fn finish(&mut self) -> Vec<OutputEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        match &mut self.mode {
            Mode::Forced(f) => {
                f.finish(&mut out);
                self.calls = 1;
            }
            Mode::Auto(a) => self.calls += a.drain(&self.config, self.ids, true, &mut out),
        }
        self.done = true;
        out
    }

    /// True once the output needs no more text (a forced call closed, or
    /// the one allowed call was made): generation should stop.
    pub fn is_complete(&self) -> bool {
        self.done && self.calls > 0
    }

    /// The names of the offered tools.
    pub fn tool_names(&self) -> &[String] {
        &self.names
    }

    /// Why the output ended, given the engine's reason (after [`ToolOutput::finish`],
    /// or after stopping early when [`ToolOutput::is_complete`]).
    pub fn ending(&self, engine: StopReason) -> Ending {
        match &self.mode {
            // A forced call cut by a limit keeps the limit's reason (its input
            // was closed for it); one the model ended itself is a call.
            Mode::Forced(f) if !f.closed_by_model() && engine != StopReason::EndTurn => {
                Ending::Engine(engine)
            }
            _ if self.calls > 0 => Ending::ToolUse,
            _ => Ending::Engine(engine),
        }
    }
}

/// A forced call: the generated text is its arguments object.
///
/// What reaches the client is always a JSON object: the longest prefix the
/// scanner can close without inventing values, then its closers. Generation
/// stops as soon as the object closes; text the model writes after it (the
/// closing tags) is never generated. If the model writes something that is
/// not JSON, the call keeps what was valid before it (`{}` at worst).
#[derive(Debug, Clone)]
pub struct ForcedCall {
    id: String,
    name: String,
    scanner: JsonPrefix,
    buf: String,
    sent: usize,
    started: bool,
    finished: bool,
}

impl ForcedCall {
    fn new(id: String, name: &str) -> Self {
        Self {
            id,
            name: name.to_string(),
            scanner: JsonPrefix::object(),
            buf: String::new(),
            sent: 0,
            started: false,
            finished: false,
        }
    }

    fn start(&mut self) -> Vec<OutputEvent> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        vec![OutputEvent::ToolStart {
            id: self.id.clone(),
            name: self.name.clone(),
        }]
    }

    fn push(&mut self, text: &str, out: &mut Vec<OutputEvent>) {
        if self.finished {
            return;
        }
        out.extend(self.start());
        self.buf.push_str(text);
        let status = self.scanner.push(text);
        let safe = self.scanner.safe_len();
        if safe > self.sent {
            out.push(OutputEvent::ToolInput(
                self.buf[self.sent..safe].to_string(),
            ));
            self.sent = safe;
        }
        if status != Scan::Partial {
            self.close(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<OutputEvent>) {
        if !self.finished {
            out.extend(self.start());
            self.close(out);
        }
    }

    fn close(&mut self, out: &mut Vec<OutputEvent>) {
        let completion = self.scanner.completion();
        if !completion.is_empty() {
            out.push(OutputEvent::ToolInput(completion));
        }
        out.push(OutputEvent::ToolEnd);
        self.finished = true;
    }

    fn closed(&self) -> bool {
        self.finished
    }

    fn closed_by_model(&self) -> bool {
        self.scanner.status() != Scan::Partial
    }
}

/// Auto mode's state: what is held back and why.
#[derive(Debug, Clone, Default)]
struct Auto {
    /// Text received and not yet sent or decided.
    buf: String,
    state: AutoState,
    /// Whitespace held until non-space text follows (dropped before calls and at the end).
    pending_ws: String,
    /// Nothing sent yet: leading whitespace is dropped, and a message that
    /// opens with `{` or `[` may be one JSON call.
    at_start: bool,
    /// Text right after a call: its leading whitespace is dropped.
    after_call: bool,
    /// A message-opening JSON value turned out not to be a call.
    not_whole_json: bool,
    started: bool,
}

#[derive(Debug, Clone, Default)]
enum AutoState {
    #[default]
    Text,
    /// After `<tool_call>`: waiting for `</tool_call>`.
    Hermes,
    /// After `[TOOL_CALLS]`: scanning its JSON (bytes of `buf` fed so far).
    Mistral(JsonPrefix, usize),
    /// A message that opens with JSON: scanning from `start` (fed so far).
    Whole(JsonPrefix, usize, usize),
}

impl Auto {
    /// Turns as much of `buf` as possible into events; `end` when no more
    /// text will come. Returns how many calls were made.
    fn drain(
        &mut self,
        config: &ToolConfig,
        ids: IdStyle,
        end: bool,
        out: &mut Vec<OutputEvent>,
    ) -> usize {
        if !self.started {
            self.started = true;
            self.at_start = true;
        }
        let mut calls = 0;
        loop {
            match std::mem::take(&mut self.state) {
                AutoState::Text => {
                    if self.at_start && !self.not_whole_json {
                        let trimmed = self.buf.trim_start();
                        let start = self.buf.len() - trimmed.len();
                        let opens_json = (trimmed.starts_with('{') || trimmed.starts_with('['))
                            && !is_prefix_of_opener(trimmed)
                            && !trimmed.starts_with(MISTRAL_OPEN);
                        if opens_json {
                            self.state = AutoState::Whole(JsonPrefix::value(), start, 0);
                            continue;
                        }
                        if (trimmed.is_empty() || is_prefix_of_opener(trimmed)) && !end {
                            return calls; // too early to tell
                        }
                    }
                    match find_opener(&self.buf) {
                        Some((at, opener)) => {
                            let before: String = self.buf[..at].to_string();
                            self.text(&before, out);
                            self.buf.drain(..at + opener.len());
                            self.state = if opener == HERMES_OPEN {
                                AutoState::Hermes
                            } else {
                                AutoState::Mistral(JsonPrefix::value(), 0)
                            };
                        }
                        None => {
                            let keep = if end {
                                0
                            } else {
                                held_opener_prefix(&self.buf)
                            };
                            let cut = self.buf.len() - keep;
                            let text: String = self.buf.drain(..cut).collect();
                            self.text(&text, out);
                            return calls;
                        }
                    }
                }
                AutoState::Hermes => match self.buf.find(HERMES_CLOSE) {
                    Some(at) => {
                        let inner: String = self.buf[..at].to_string();
                        self.buf.drain(..at + HERMES_CLOSE.len());
                        calls += self.unit(&inner, HERMES_OPEN, HERMES_CLOSE, config, ids, out);
                    }
                    None if end => {
                        // No closing tag: a complete call still counts.
                        let inner = std::mem::take(&mut self.buf);
                        calls += self.unit(&inner, HERMES_OPEN, "", config, ids, out);
                    }
                    None => {
                        self.state = AutoState::Hermes;
                        return calls;
                    }
                },
                AutoState::Mistral(mut scanner, fed) => {
                    let status = scanner.push(&self.buf[fed..]);
                    match status {
                        Scan::Complete(len) => {
                            let inner: String = self.buf.drain(..len).collect();
                            calls += self.unit(&inner, MISTRAL_OPEN, "", config, ids, out);
                        }
                        Scan::Partial if !end => {
                            let fed = self.buf.len();
                            self.state = AutoState::Mistral(scanner, fed);
                            return calls;
                        }
                        // Not JSON (or unfinished at the end): the opener was text.
                        _ => {
                            self.text(MISTRAL_OPEN, out);
                        }
                    }
                }
                AutoState::Whole(mut scanner, start, fed) => {
                    let status = scanner.push(&self.buf[start + fed..]);
                    match status {
                        Scan::Complete(len) => {
                            let json = &self.buf[start..start + len];
                            let found = serde_json::from_str::<Value>(json)
                                .ok()
                                .and_then(|v| calls_in_json(&v, config));
                            match found {
                                Some(found) => {
                                    self.buf.drain(..start + len);
                                    calls += self.emit_calls(found, ids, out);
                                }
                                None => self.not_whole_json = true,
                            }
                        }
                        Scan::Partial if !end => {
                            let fed = self.buf.len() - start;
                            self.state = AutoState::Whole(scanner, start, fed);
                            return calls;
                        }
                        _ => self.not_whole_json = true,
                    }
                }
            }
        }
    }

    /// A delimited call (`inner` between `open` and `close`): calls if it is
    /// valid JSON naming offered tools, else the original text.
    fn unit(
        &mut self,
        inner: &str,
        open: &str,
        close: &str,
        config: &ToolConfig,
        ids: IdStyle,
        out: &mut Vec<OutputEvent>,
    ) -> usize {
        let found = serde_json::from_str::<Value>(inner.trim())
            .ok()
            .and_then(|v| calls_in_json(&v, config));
        match found {
            Some(found) => self.emit_calls(found, ids, out),
            None => {
                self.text(&format!("{open}{inner}{close}"), out);
                0
            }
        }
    }

    fn emit_calls(
        &mut self,
        found: Vec<FoundCall>,
        ids: IdStyle,
        out: &mut Vec<OutputEvent>,
    ) -> usize {
        self.pending_ws.clear();
        self.at_start = false;
        self.after_call = true;
        let n = found.len();
        for call in found {
            let call = ToolCall {
                id: ids.new_id(),
                name: call.name,
                input: call.input,
            };
            push_call(&call, out);
        }
        n
    }

    /// Sends text, holding trailing whitespace and dropping leading
    /// whitespace at the start and after calls.
    fn text(&mut self, text: &str, out: &mut Vec<OutputEvent>) {
        let mut text = text;
        if self.at_start || self.after_call {
            text = text.trim_start();
        }
        let body = text.trim_end();
        if body.is_empty() {
            if !(self.at_start || self.after_call) {
                self.pending_ws.push_str(text);
            }
            return;
        }
        let ws = &text[body.len()..];
        let mut s = std::mem::take(&mut self.pending_ws);
        s.push_str(body);
        self.pending_ws = ws.to_string();
        self.at_start = false;
        self.after_call = false;
        match out.last_mut() {
            Some(OutputEvent::Text(prev)) => prev.push_str(&s),
            _ => out.push(OutputEvent::Text(s)),
        }
    }
}

/// The events of a whole call.
pub fn push_call(call: &ToolCall, out: &mut Vec<OutputEvent>) {
    out.push(OutputEvent::ToolStart {
        id: call.id.clone(),
        name: call.name.clone(),
    });
    out.push(OutputEvent::ToolInput(call.input.to_string()));
    out.push(OutputEvent::ToolEnd);
}

const OPENERS: [&str; 2] = [HERMES_OPEN, MISTRAL_OPEN];

/// The first opener in `text` and where it is.
fn find_opener(text: &str) -> Option<(usize, &'static str)> {
    OPENERS
        .iter()
        .filter_map(|o| text.find(o).map(|at| (at, *o)))
        .min_by_key(|(at, _)| *at)
}

/// Whether `text` is a proper prefix of an opener.
fn is_prefix_of_opener(text: &str) -> bool {
    OPENERS
        .iter()
        .any(|o| o.len() > text.len() && o.starts_with(text))
}

/// Length of the longest suffix of `text` that may begin an opener.
fn held_opener_prefix(text: &str) -> usize {
    OPENERS
        .iter()
        .flat_map(|o| {
            (1..o.len().min(text.len() + 1))
                .rev()
                .find(|&n| text.is_char_boundary(text.len() - n) && text.ends_with(&o[..n]))
        })
        .max()
        .unwrap_or(0)
}

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
    use crate::tools::{ToolChoice, ToolSpec};
    use proptest::prelude::*;
    use serde_json::json;

    fn config(names: &[&str]) -> ToolConfig {
        ToolConfig {
            tools: names
                .iter()
                .map(|n| ToolSpec {
                    name: n.to_string(),
                    description: None,
                    input_schema: json!({"type": "object"}),
                })
                .collect(),
            choice: ToolChoice::Auto,
            single_call: false,
        }
    }

    /// Blocks and ending of `pieces` fed one by one (auto mode unless `forced`).
    fn run(pieces: &[&str], forced: Option<&str>, engine: StopReason) -> (Vec<Block>, Ending) {
        let mut out = ToolOutput::new(
            &config(&["get_weather", "search"]),
            IdStyle::Converse,
            forced,
        );
        let mut c = BlockCollector::default();
        c.add(out.start());
        for p in pieces {
            c.add(out.push(p));
        }
        c.add(out.finish());
        (c.into_blocks(), out.ending(engine))
    }

    fn text(s: &str) -> Block {
        Block::Text(s.to_string())
    }

    fn call_of(b: &Block) -> (&str, &Value) {
        match b {
            Block::ToolUse(c) => {
                assert!(c.id.starts_with("tooluse_"));
                (c.name.as_str(), &c.input)
            }
            Block::Text(t) => panic!("expected a call, got text {t:?}"),
        }
    }

    #[test]
    fn hermes_calls_after_text_become_blocks() {
        let (blocks, ending) = run(
            &[
                "Let me check.\n<tool",
                "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n",
                "<tool_call>{\"name\": \"search\", \"arguments\": \"{\\\"q\\\": 1}\"}</tool_call>",
            ],
            None,
            StopReason::EndTurn,
        );
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert_eq!(blocks[0], text("Let me check."));
        assert_eq!(
            call_of(&blocks[1]),
            ("get_weather", &json!({"city": "Paris"}))
        );
        assert_eq!(call_of(&blocks[2]), ("search", &json!({"q": 1})));
        assert_eq!(ending, Ending::ToolUse);
    }

    #[test]
    fn unknown_names_and_bad_json_stay_text() {
        for raw in [
            "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"search\", \"arguments\": {</tool_call>",
            "[TOOL_CALLS] not json",
            "<tool_call>{\"name\": \"search\"",
        ] {
            let (blocks, ending) = run(&[raw], None, StopReason::EndTurn);
            assert_eq!(blocks, vec![text(raw)], "{raw}");
            assert_eq!(ending, Ending::Engine(StopReason::EndTurn));
        }
    }

    #[test]
    fn mistral_and_whole_message_forms_are_found() {
        let (blocks, _) = run(
            &["[TOOL_CALLS][{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}, {\"name\": \"get_weather\", \"arguments\": {}}]"],
            None,
            StopReason::EndTurn,
        );
        assert_eq!(call_of(&blocks[0]), ("search", &json!({"q": "x"})));
        assert_eq!(call_of(&blocks[1]), ("get_weather", &json!({})));
        let (blocks, _) = run(
            &[" {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"],
            None,
            StopReason::EndTurn,
        );
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            call_of(&blocks[0]),
            ("get_weather", &json!({"city": "Oslo"}))
        );
        // JSON that is not a call is text, all of it.
        let (blocks, _) = run(&["{\"answer\": 42} is it"], None, StopReason::EndTurn);
        assert_eq!(blocks, vec![text("{\"answer\": 42} is it")]);
    }

    #[test]
    fn a_complete_call_without_its_closing_tag_counts_at_the_end() {
        let (blocks, ending) = run(
            &["<tool_call>\n{\"name\": \"search\", \"arguments\": {}}\n"],
            None,
            StopReason::EndTurn,
        );
        assert_eq!(call_of(&blocks[0]), ("search", &json!({})));
        assert_eq!(ending, Ending::ToolUse);
    }

    #[test]
    fn forced_calls_stream_their_input_and_close_it() {
        let mut out = ToolOutput::new(
            &config(&["get_weather"]),
            IdStyle::Converse,
            Some("get_weather"),
        );
        let start = out.start();
        assert!(
            matches!(&start[..], [OutputEvent::ToolStart { name, .. }] if name == "get_weather")
        );
        assert_eq!(
            out.push("{\"city\": \"Pa"),
            vec![OutputEvent::ToolInput("{\"city\": \"Pa".into())]
        );
        assert!(!out.is_complete());
        assert_eq!(
            out.push("ris\", \"days\": 3}}\n</tool_call>"),
            vec![
                OutputEvent::ToolInput("ris\", \"days\": 3}".into()),
                OutputEvent::ToolEnd
            ]
        );
        assert!(out.is_complete());
        assert!(out.push("more").is_empty());
        assert!(out.finish().is_empty());
        assert_eq!(out.ending(StopReason::EndTurn), Ending::ToolUse);
    }

    #[test]
    fn forced_calls_cut_short_are_closed_and_keep_the_limit_as_reason() {
        let (blocks, ending) = run(
            &["{\"city\": \"Par"],
            Some("get_weather"),
            StopReason::MaxTokens,
        );
        assert_eq!(
            call_of(&blocks[0]),
            ("get_weather", &json!({"city": "Par"}))
        );
        assert_eq!(ending, Ending::Engine(StopReason::MaxTokens));
        // The model ending its turn mid-object, or writing garbage, still gives a call.
        let (blocks, ending) = run(
            &["{\"city\": \"Paris\", "],
            Some("get_weather"),
            StopReason::EndTurn,
        );
        assert_eq!(
            call_of(&blocks[0]),
            ("get_weather", &json!({"city": "Paris"}))
        );
        assert_eq!(ending, Ending::ToolUse);
        let (blocks, ending) = run(
            &["I think the weather"],
            Some("get_weather"),
            StopReason::MaxTokens,
        );
        assert_eq!(call_of(&blocks[0]), ("get_weather", &json!({})));
        assert_eq!(ending, Ending::ToolUse);
        let (blocks, _) = run(&[], Some("get_weather"), StopReason::MaxTokens);
        assert_eq!(call_of(&blocks[0]), ("get_weather", &json!({})));
    }

    #[test]
    fn single_call_stops_after_the_first() {
        let mut c = config(&["search"]);
        c.single_call = true;
        let mut out = ToolOutput::new(&c, IdStyle::Anthropic, None);
        let ev =
            out.push("<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call><tool_call>");
        assert_eq!(ev.len(), 3);
        assert!(out.is_complete());
        assert!(out
            .push("{\"name\": \"search\", \"arguments\": {}}</tool_call>")
            .is_empty());
    }

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

    /// Blocks with ids blanked, so runs compare.
    fn shape(blocks: Vec<Block>) -> Vec<Block> {
        blocks
            .into_iter()
            .map(|b| match b {
                Block::ToolUse(mut c) => {
                    c.id.clear();
                    Block::ToolUse(c)
                }
                t => t,
            })
            .collect()
    }

    fn split_at_points(text: &str, points: &[prop::sample::Index]) -> Vec<String> {
        let mut cuts: Vec<usize> = points
            .iter()
            .map(|p| p.index(text.len() + 1))
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in cuts {
            pieces.push(text[last..c].to_string());
            last = c;
        }
        pieces.push(text[last..].to_string());
        pieces
    }

    proptest! {
        /// However the text is split into tokens, the blocks are the same;
        /// a valid call between arbitrary texts is always found.
        #[test]
        fn splits_do_not_change_the_blocks(
            before in "[a-zA-Z .<>\\[\\]{}\"]{0,30}",
            after in "[a-zA-Z .]{0,20}",
            city in "[a-zA-Z ]{0,10}",
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let call = format!("<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"{city}\"}}}}\n</tool_call>");
            let whole = format!("{before}\n{call}\n{after}");
            let (one, _) = run(&[&whole], None, StopReason::EndTurn);
            let pieces = split_at_points(&whole, &points);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (many, ending) = run(&refs, None, StopReason::EndTurn);
            prop_assert_eq!(shape(one), shape(many.clone()));
            prop_assert_eq!(ending, Ending::ToolUse);
            let found = many.iter().filter_map(|b| match b {
                Block::ToolUse(c) => Some(c.input.clone()),
                _ => None,
            }).collect::<Vec<_>>();
            prop_assert!(found.contains(&json!({"city": city})), "{:?}", many);
        }

        /// Arbitrary text (malformed calls included) never loses characters:
        /// without calls, the text blocks hold the text, trimmed.
        #[test]
        fn text_without_calls_survives(
            text in "[a-z <>/_\\[\\]{}\":,A-Z]{0,60}",
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let pieces = split_at_points(&text, &points);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (blocks, _) = run(&refs, None, StopReason::EndTurn);
            let mut joined = String::new();
            for b in &blocks {
                match b {
                    Block::Text(t) => joined.push_str(t),
                    Block::ToolUse(c) => prop_assert!(false, "call from {:?}: {:?}", text, c),
                }
            }
            prop_assert_eq!(joined, text.trim());
        }

        /// Forced calls always yield one object-valued call, whatever the model writes.
        #[test]
        fn forced_calls_always_yield_an_object(
            text in "\\PC{0,40}",
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let pieces = split_at_points(&text, &points);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (blocks, _) = run(&refs, Some("search"), StopReason::MaxTokens);
            prop_assert_eq!(blocks.len(), 1);
            prop_assert!(matches!(&blocks[0], Block::ToolUse(c) if c.input.is_object() && c.name == "search"));
        }
    }
}
