//! An incremental JSON scanner for generated tool arguments.
//!
//! Text arrives a token at a time and must be streamed to the client as it
//! comes, yet what the client concatenates must end up valid JSON even when
//! the model stops early or writes garbage. The scanner tracks the longest
//! prefix that can be completed by *appending only closers* (`"`, `]`, `}`):
//! that prefix is safe to send; a key without its value, a trailing comma,
//! half a literal or half an escape is held back. [`JsonPrefix::completion`]
//! then closes the safe prefix, so `safe prefix + completion` is always a
//! valid JSON value.

/// Deepest nesting accepted (serde_json's own recursion limit is 128).
const MAX_DEPTH: usize = 100;

/// Where a scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// More input may follow.
    Partial,
    /// The top-level value ended; the byte offset just past it.
    Complete(usize),
    /// The byte at this offset cannot continue valid JSON.
    Invalid(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value.
    Start,
    /// Expecting a value (after `:` or an array's `,`).
    Value,
    /// Just after `[`: a value or `]`.
    ArrayFirst,
    /// Just after `{`: a key or `}`.
    ObjectFirst,
    /// After an object's `,`: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or a closer (or the end at top level).
    AfterValue,
    /// Inside a string.
    Str {
        key: bool,
    },
    /// After a backslash in a string.
    Escape {
        key: bool,
    },
    /// Inside `\uXXXX`: hex digits read so far and their value; `low` when
    /// this escape must be a low surrogate.
    Unicode {
        key: bool,
        digits: u8,
        value: u32,
        low: bool,
    },
    /// After a high-surrogate escape: `\` must follow.
    LowBackslash {
        key: bool,
    },
    /// After a high surrogate's following `\`: `u` must follow.
    LowU {
        key: bool,
    },
    NumMinus,
    NumZero,
    NumInt,
    NumDot,
    NumFrac,
    NumE,
    NumESign,
    NumExp,
    /// Inside `true`/`false`/`null`: the bytes still expected.
    Literal(&'static [u8]),
    Done,
    Failed,
}

/// An incremental scanner of one JSON value.
#[derive(Debug, Clone)]
pub struct JsonPrefix {
    object_only: bool,
    state: State,
    /// Open containers, innermost last: `b'{'` or `b'['`.
    stack: Vec<u8>,
    consumed: usize,
    safe: usize,
    safe_in_string: bool,
    safe_depth: usize,
    outcome: Scan,
}

impl JsonPrefix {
    /// A scanner whose top-level value must be an object (tool arguments).
    pub fn object() -> Self {
        Self::new(true)
    }

    /// A scanner of any JSON value.
    pub fn value() -> Self {
        Self::new(false)
    }

    fn new(object_only: bool) -> Self {
        Self {
            object_only,
            state: State::Start,
            stack: Vec::new(),
            consumed: 0,
            safe: 0,
            safe_in_string: false,
            safe_depth: 0,
            outcome: Scan::Partial,
        }
    }

    /// Feeds more text; once the scan is complete or invalid, later text is ignored.
    pub fn push(&mut self, text: &str) -> Scan {
        for c in text.chars() {
            if self.outcome != Scan::Partial {
                break;
            }
            let at = self.consumed;
            self.consumed += c.len_utf8();
            match self.step(c) {
                Some(state) => {
                    self.state = state;
                    if state == State::Done {
                        self.outcome = Scan::Complete(self.consumed);
                    }
                    if self.is_safe() {
                        self.mark_safe();
                    }
                }
                None => {
                    self.state = State::Failed;
                    self.outcome = Scan::Invalid(at);
                }
            }
        }
        self.outcome
    }

    /// How the scan stands.
    pub fn status(&self) -> Scan {
        self.outcome
    }

    /// Bytes from the start of the input that [`JsonPrefix::completion`] closes.
    pub fn safe_len(&self) -> usize {
        self.safe
    }

    /// Text that, appended to the first [`JsonPrefix::safe_len`] bytes, makes
    /// a complete JSON value (empty once the value is complete; `{}` or
    /// `null` when no value has started).
    pub fn completion(&self) -> String {
        if matches!(self.outcome, Scan::Complete(_)) {
            return String::new();
        }
        if self.safe == 0 {
            return if self.object_only { "{}" } else { "null" }.to_string();
        }
        let mut out = String::new();
        if self.safe_in_string {
            out.push('"');
        }
        for &open in self.stack[..self.safe_depth].iter().rev() {
            out.push(if open == b'{' { '}' } else { ']' });
        }
        out
    }

    fn is_safe(&self) -> bool {
        matches!(
            self.state,
            State::ObjectFirst
                | State::ArrayFirst
                | State::AfterValue
                | State::Done
                | State::Str { key: false }
                | State::NumZero
                | State::NumInt
                | State::NumFrac
                | State::NumExp
        )
    }

    fn mark_safe(&mut self) {
        self.safe = self.consumed;
        self.safe_in_string = self.state == State::Str { key: false };
        self.safe_depth = self.stack.len();
    }

    /// The state after `c`, or `None` when `c` breaks the JSON.
    fn step(&mut self, c: char) -> Option<State> {
        let ws = matches!(c, ' ' | '\t' | '\n' | '\r');
        match self.state {
            State::Start => {
                if ws {
                    Some(State::Start)
                } else if self.object_only && c != '{' {
                    None
                } else {
                    self.value_start(c)
                }
            }
            State::Value => {
                if ws {
                    Some(State::Value)
                } else {
                    self.value_start(c)
                }
            }
            State::ArrayFirst => match c {
                _ if ws => Some(State::ArrayFirst),
                ']' => self.close(b'['),
                _ => self.value_start(c),
            },
            State::ObjectFirst => match c {
                _ if ws => Some(State::ObjectFirst),
                '}' => self.close(b'{'),
                '"' => Some(State::Str { key: true }),
                _ => None,
            },
            State::Key => match c {
                _ if ws => Some(State::Key),
                '"' => Some(State::Str { key: true }),
                _ => None,
            },
            State::Colon => match c {
                _ if ws => Some(State::Colon),
                ':' => Some(State::Value),
                _ => None,
            },
            State::AfterValue => self.after_value(c),
            State::Str { key } => match c {
                '"' => Some(if key { State::Colon } else { self.value_end() }),
                '\\' => Some(State::Escape { key }),
                c if (c as u32) < 0x20 => None,
                _ => Some(State::Str { key }),
            },
            State::Escape { key } => match c {
                '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => Some(State::Str { key }),
                'u' => Some(State::Unicode {
                    key,
                    digits: 0,
                    value: 0,
                    low: false,
                }),
                _ => None,
            },
            State::Unicode {
                key,
                digits,
                value,
                low,
            } => {
                let value = value * 16 + c.to_digit(16)?;
                if digits < 3 {
                    return Some(State::Unicode {
                        key,
                        digits: digits + 1,
                        value,
                        low,
                    });
                }
                let is_high = (0xD800..0xDC00).contains(&value);
                let is_low = (0xDC00..0xE000).contains(&value);
                match (low, is_high, is_low) {
                    (true, _, true) => Some(State::Str { key }),
                    (true, _, false) => None,
                    (false, true, _) => Some(State::LowBackslash { key }),
                    (false, _, true) => None,
                    (false, false, false) => Some(State::Str { key }),
                }
            }
            State::LowBackslash { key } => (c == '\\').then_some(State::LowU { key }),
            State::LowU { key } => (c == 'u').then_some(State::Unicode {
                key,
                digits: 0,
                value: 0,
                low: true,
            }),
            State::NumMinus => match c {
                '0' => Some(State::NumZero),
                '1'..='9' => Some(State::NumInt),
                _ => None,
            },
            State::NumZero => match c {
                '.' => Some(State::NumDot),
                'e' | 'E' => Some(State::NumE),
                _ => self.number_end(c),
            },
            State::NumInt => match c {
                '0'..='9' => Some(State::NumInt),
                '.' => Some(State::NumDot),
                'e' | 'E' => Some(State::NumE),
                _ => self.number_end(c),
            },
            State::NumDot => c.is_ascii_digit().then_some(State::NumFrac),
            State::NumFrac => match c {
                '0'..='9' => Some(State::NumFrac),
                'e' | 'E' => Some(State::NumE),
                _ => self.number_end(c),
            },
            State::NumE => match c {
                '+' | '-' => Some(State::NumESign),
                '0'..='9' => Some(State::NumExp),
                _ => None,
            },
            State::NumESign => c.is_ascii_digit().then_some(State::NumExp),
            State::NumExp => match c {
                '0'..='9' => Some(State::NumExp),
                _ => self.number_end(c),
            },
            State::Literal(rest) => {
                let (&first, tail) = rest.split_first()?;
                if c as u32 != u32::from(first) {
                    return None;
                }
                Some(if tail.is_empty() {
                    self.value_end()
                } else {
                    State::Literal(tail)
                })
            }
            State::Done | State::Failed => None,
        }
    }

    fn value_start(&mut self, c: char) -> Option<State> {
        match c {
            '{' => self.open(b'{', State::ObjectFirst),
            '[' => self.open(b'[', State::ArrayFirst),
            '"' => Some(State::Str { key: false }),
            '-' => Some(State::NumMinus),
            '0' => Some(State::NumZero),
            '1'..='9' => Some(State::NumInt),
            't' => Some(State::Literal(b"rue")),
            'f' => Some(State::Literal(b"alse")),
            'n' => Some(State::Literal(b"ull")),
            _ => None,
        }
    }

    fn open(&mut self, bracket: u8, next: State) -> Option<State> {
        if self.stack.len() >= MAX_DEPTH {
            return None;
        }
        self.stack.push(bracket);
        Some(next)
    }

    fn close(&mut self, bracket: u8) -> Option<State> {
        if self.stack.last() != Some(&bracket) {
            return None;
        }
        self.stack.pop();
        Some(self.value_end())
    }

    /// The state after a complete value.
    fn value_end(&self) -> State {
        if self.stack.is_empty() {
            State::Done
        } else {
            State::AfterValue
        }
    }

    /// A number ended at `c`, which belongs to what follows it.
    fn number_end(&mut self, c: char) -> Option<State> {
        if self.stack.is_empty() {
            // A bare top-level number ends only where the input does.
            return None;
        }
        self.after_value(c)
    }

    fn after_value(&mut self, c: char) -> Option<State> {
        match (c, self.stack.last()) {
            (' ' | '\t' | '\n' | '\r', _) => Some(State::AfterValue),
            (',', Some(b'{')) => Some(State::Key),
            (',', Some(b'[')) => Some(State::Value),
            ('}', _) => self.close(b'{'),
            (']', _) => self.close(b'['),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// The safe prefix of `text` plus its completion.
    fn closed(text: &str, object: bool) -> String {
        let mut s = if object {
            JsonPrefix::object()
        } else {
            JsonPrefix::value()
        };
        s.push(text);
        match s.status() {
            Scan::Complete(end) => text[..end].to_string(),
            _ => format!("{}{}", &text[..s.safe_len()], s.completion()),
        }
    }

    #[test]
    fn complete_objects_end_where_they_close() {
        let mut s = JsonPrefix::object();
        let text = r#"{"a": [1, 2.5e-3, "x\"y"], "b": {"c": null}}
</tool_call>"#;
        let end = text.find('\n').unwrap_or(0);
        assert_eq!(s.push(text), Scan::Complete(end));
        assert_eq!(s.completion(), "");
    }

    #[test]
    fn partial_objects_close_without_inventing_values() {
        let cases = [
            ("", "{}"),
            ("  ", "{}"),
            ("{", "{}"),
            (r#"{"ci"#, "{}"),
            (r#"{"city""#, "{}"),
            (r#"{"city": "#, "{}"),
            (r#"{"city": "Par"#, r#"{"city": "Par"}"#),
            (r#"{"city": "Paris","#, r#"{"city": "Paris"}"#),
            (
                r#"{"city": "Paris", "n": 1"#,
                r#"{"city": "Paris", "n": 1}"#,
            ),
            (r#"{"n": 1."#, r#"{"n": 1}"#),
            (r#"{"n": -"#, "{}"),
            (r#"{"n": 1e+"#, r#"{"n": 1}"#),
            (r#"{"ok": tr"#, "{}"),
            (r#"{"a": [1, {"b": "c\u00"#, r#"{"a": [1, {"b": "c"}]}"#),
            (r#"{"a": "x\"#, r#"{"a": "x"}"#),
            (r#"{"a": "\ud83d"#, r#"{"a": ""}"#),
            (r#"{"a": "\ud83d\ude00"#, r#"{"a": "\ud83d\ude00"}"#),
        ];
        for (input, want) in cases {
            assert_eq!(closed(input, true), want, "{input}");
            serde_json::from_str::<Value>(want).expect(want);
        }
    }

    #[test]
    fn garbage_stops_the_scan_and_keeps_what_came_before() {
        let cases = [
            ("hello", 0, "{}"),
            (r#"{"a": 1 x"#, 8, r#"{"a": 1 }"#),
            (r#"{"a": 01}"#, 7, r#"{"a": 0}"#),
            (r#"{"a": "b", }"#, 11, r#"{"a": "b"}"#),
            (
                r#"{"a": "li
ne"}"#,
                9,
                r#"{"a": "li"}"#,
            ),
            (r#"{"a": "\ude00"}"#, 12, r#"{"a": ""}"#),
            (r#"{"a": [1}"#, 8, r#"{"a": [1]}"#),
        ];
        for (input, at, want) in cases {
            let mut s = JsonPrefix::object();
            assert_eq!(s.push(input), Scan::Invalid(at), "{input}");
            assert_eq!(closed(input, true), want, "{input}");
        }
    }

    #[test]
    fn value_mode_takes_any_top_level_value() {
        let mut s = JsonPrefix::value();
        assert_eq!(s.push(r#"[{"name": "x"}] tail"#), Scan::Complete(15));
        assert_eq!(closed("42", false), "42");
        assert_eq!(closed("\"ab", false), "\"ab\"");
        assert_eq!(closed("", false), "null");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        let mut s = JsonPrefix::value();
        assert_eq!(s.push(&deep), Scan::Invalid(MAX_DEPTH));
        serde_json::from_str::<Value>(&closed(&deep, false)).expect("closes");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"\\\\é]{0,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Every prefix of valid JSON, fed in arbitrary pieces, closes to valid
        /// JSON that extends the safe prefix; the whole text completes.
        #[test]
        fn every_prefix_closes_to_valid_json(
            v in prop::collection::btree_map("[a-z]{1,4}", arb_json(), 0..4),
            pretty in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            split in any::<prop::sample::Index>(),
        ) {
            let v = Value::Object(v.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                v.to_string()
            };
            let mut cut = cut.index(text.len() + 1);
            while !text.is_char_boundary(cut) { cut -= 1; }
            let prefix = &text[..cut];
            let mut split = split.index(prefix.len() + 1);
            while !prefix.is_char_boundary(split) { split -= 1; }
            let mut s = JsonPrefix::object();
            s.push(&prefix[..split]);
            let first_safe = s.safe_len();
            let status = s.push(&prefix[split..]);
            prop_assert!(s.safe_len() >= first_safe);
            prop_assert!(!matches!(status, Scan::Invalid(_)), "{prefix}");
            let closed = match status {
                Scan::Complete(end) => prefix[..end].to_string(),
                _ => format!("{}{}", &prefix[..s.safe_len()], s.completion()),
            };
            let parsed: Value = serde_json::from_str(&closed)
                .map_err(|e| TestCaseError::fail(format!("{closed}: {e}")))?;
            prop_assert!(parsed.is_object());
            if cut == text.len() {
                prop_assert_eq!(parsed, v);
            }
        }

        /// Arbitrary text never panics and always closes to a JSON object.
        #[test]
        fn arbitrary_text_closes_to_an_object(text in "\\PC{0,40}", tail in "[{}\\[\\]\",:0-9a-z\\\\ ]{0,40}") {
            let input = format!("{{{text}{tail}");
            let closed = closed(&input, true);
            let parsed: Value = serde_json::from_str(&closed)
                .map_err(|e| TestCaseError::fail(format!("{closed}: {e}")))?;
            prop_assert!(parsed.is_object());
        }
    }
}
