//! Auto tool choice: generated text streams as text until a call opener may
//! be starting; then it is held until the call closes (a tool-use block if
//! its JSON is valid and its name offered, else the original text).

use serde_json::Value;

use super::json_prefix::{JsonPrefix, Scan};
use super::output::{push_call, OutputEvent};
use super::parse::{calls_in_json, FoundCall, HERMES_CLOSE, HERMES_OPEN, MISTRAL_OPEN};
use super::{IdStyle, ToolCall, ToolConfig};

/// Auto mode's state: what is held back and why.
#[derive(Debug, Clone, Default)]
pub struct Auto {
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

/// After a step: go on with the buffer, or wait for more text.
enum Flow {
    Continue,
    Wait,
}

/// What one drain works with.
struct Ctx<'a> {
    config: &'a ToolConfig,
    ids: IdStyle,
    /// No more text will come.
    end: bool,
    out: &'a mut Vec<OutputEvent>,
    calls: usize,
}

impl Auto {
    /// Adds generated text.
    pub fn push(&mut self, text: &str) {
        self.buf.push_str(text);
    }

    /// Turns as much of the buffer as possible into events; `end` when no
    /// more text will come. Returns how many calls were made.
    pub fn drain(
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
        let mut cx = Ctx {
            config,
            ids,
            end,
            out,
            calls: 0,
        };
        loop {
            let flow = match std::mem::take(&mut self.state) {
                AutoState::Text => self.step_text(&mut cx),
                AutoState::Hermes => self.step_hermes(&mut cx),
                AutoState::Mistral(scanner, fed) => self.step_mistral(scanner, fed, &mut cx),
                AutoState::Whole(scanner, start, fed) => {
                    self.step_whole(scanner, start, fed, &mut cx)
                }
            };
            if let Flow::Wait = flow {
                return cx.calls;
            }
        }
    }

    /// Plain text: send it, up to an opener (or what may begin one).
    fn step_text(&mut self, cx: &mut Ctx<'_>) -> Flow {
        if self.at_start && !self.not_whole_json {
            let trimmed = self.buf.trim_start();
            let start = self.buf.len() - trimmed.len();
            let opens_json = (trimmed.starts_with('{') || trimmed.starts_with('['))
                && !is_prefix_of_opener(trimmed)
                && !trimmed.starts_with(MISTRAL_OPEN);
            if opens_json {
                self.state = AutoState::Whole(JsonPrefix::value(), start, 0);
                return Flow::Continue;
            }
            if (trimmed.is_empty() || is_prefix_of_opener(trimmed)) && !cx.end {
                return Flow::Wait; // too early to tell
            }
        }
        match find_opener(&self.buf) {
            Some((at, opener)) => {
                let before = self.buf[..at].to_string();
                self.text(&before, cx.out);
                self.buf.drain(..at + opener.len());
                self.state = if opener == HERMES_OPEN {
                    AutoState::Hermes
                } else {
                    AutoState::Mistral(JsonPrefix::value(), 0)
                };
                Flow::Continue
            }
            None => {
                let keep = if cx.end {
                    0
                } else {
                    held_opener_prefix(&self.buf)
                };
                let cut = self.buf.len() - keep;
                let text: String = self.buf.drain(..cut).collect();
                self.text(&text, cx.out);
                Flow::Wait
            }
        }
    }

    /// After `<tool_call>`: the call ends at `</tool_call>` (or at the end).
    fn step_hermes(&mut self, cx: &mut Ctx<'_>) -> Flow {
        match self.buf.find(HERMES_CLOSE) {
            Some(at) => {
                let inner = self.buf[..at].to_string();
                self.buf.drain(..at + HERMES_CLOSE.len());
                self.unit(&inner, HERMES_OPEN, HERMES_CLOSE, cx);
                Flow::Continue
            }
            None if cx.end => {
                // No closing tag: a complete call still counts.
                let inner = std::mem::take(&mut self.buf);
                self.unit(&inner, HERMES_OPEN, "", cx);
                Flow::Continue
            }
            None => {
                self.state = AutoState::Hermes;
                Flow::Wait
            }
        }
    }

    /// After `[TOOL_CALLS]`: the call list is the JSON value that follows.
    fn step_mistral(&mut self, mut scanner: JsonPrefix, fed: usize, cx: &mut Ctx<'_>) -> Flow {
        match scanner.push(&self.buf[fed..]) {
            Scan::Complete(len) => {
                let inner: String = self.buf.drain(..len).collect();
                self.unit(&inner, MISTRAL_OPEN, "", cx);
            }
            Scan::Partial if !cx.end => {
                let fed = self.buf.len();
                self.state = AutoState::Mistral(scanner, fed);
                return Flow::Wait;
            }
            // Not JSON (or unfinished at the end): the opener was text.
            _ => self.text(MISTRAL_OPEN, cx.out),
        }
        Flow::Continue
    }

    /// A message opening with JSON: one call (or a list) if the whole value is.
    fn step_whole(
        &mut self,
        mut scanner: JsonPrefix,
        start: usize,
        fed: usize,
        cx: &mut Ctx<'_>,
    ) -> Flow {
        match scanner.push(&self.buf[start + fed..]) {
            Scan::Complete(len) => {
                let found = serde_json::from_str::<Value>(&self.buf[start..start + len])
                    .ok()
                    .and_then(|v| calls_in_json(&v, cx.config));
                match found {
                    Some(found) => {
                        self.buf.drain(..start + len);
                        self.emit_calls(found, cx);
                    }
                    None => self.not_whole_json = true,
                }
            }
            Scan::Partial if !cx.end => {
                let fed = self.buf.len() - start;
                self.state = AutoState::Whole(scanner, start, fed);
                return Flow::Wait;
            }
            _ => self.not_whole_json = true,
        }
        Flow::Continue
    }

    /// A delimited call (`inner` between `open` and `close`): calls if it is
    /// valid JSON naming offered tools, else the original text.
    fn unit(&mut self, inner: &str, open: &str, close: &str, cx: &mut Ctx<'_>) {
        let found = serde_json::from_str::<Value>(inner.trim())
            .ok()
            .and_then(|v| calls_in_json(&v, cx.config));
        match found {
            Some(found) => self.emit_calls(found, cx),
            None => self.text(&format!("{open}{inner}{close}"), cx.out),
        }
    }

    fn emit_calls(&mut self, found: Vec<FoundCall>, cx: &mut Ctx<'_>) {
        self.pending_ws.clear();
        self.at_start = false;
        self.after_call = true;
        cx.calls += found.len();
        for call in found {
            let call = ToolCall {
                id: cx.ids.new_id(),
                name: call.name,
                input: call.input,
            };
            push_call(&call, cx.out);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opener_prefixes_are_held_and_nothing_else() {
        assert_eq!(held_opener_prefix("text <tool_"), 6);
        assert_eq!(held_opener_prefix("text [TOOL"), 5);
        assert_eq!(held_opener_prefix("text <"), 1);
        assert_eq!(held_opener_prefix("text"), 0);
        assert_eq!(held_opener_prefix("a <tool_call>"), 0);
        assert_eq!(
            find_opener("x [TOOL_CALLS] <tool_call>"),
            Some((2, MISTRAL_OPEN))
        );
        assert!(is_prefix_of_opener("[TOOL"));
        assert!(!is_prefix_of_opener("[{"));
    }
}
