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

use super::auto::Auto;
pub use super::blocks::{Block, BlockCollector, BlockEvent, BlockIndexer};
use super::json_prefix::{JsonPrefix, Scan};
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
                a.push(text);
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

/// The events of a whole call.
pub fn push_call(call: &ToolCall, out: &mut Vec<OutputEvent>) {
    out.push(OutputEvent::ToolStart {
        id: call.id.clone(),
        name: call.name.clone(),
    });
    out.push(OutputEvent::ToolInput(call.input.to_string()));
    out.push(OutputEvent::ToolEnd);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{ToolChoice, ToolSpec};
    use proptest::prelude::*;
    use serde_json::{json, Value};

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
