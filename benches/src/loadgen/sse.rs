//! Server-sent events (`text/event-stream`), decoded incrementally as bytes
//! arrive, per the WHATWG HTML "event stream interpretation": lines end in
//! CRLF, LF or CR; `data:` lines accumulate; a blank line dispatches; lines
//! starting with `:` are comments. Written here rather than taken from a crate
//! because the bench needs push-style decoding (feed each body frame as it
//! arrives and time it) and the format is a few rules.

/// Longest line accepted: far beyond any chat chunk, small enough to bound memory.
pub const MAX_LINE: usize = 8 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (`message` is implied when absent).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// A line longer than [`MAX_LINE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Incremental decoder state.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// The previous chunk ended in CR: a leading LF belongs to that line end.
    skip_lf: bool,
    started: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        if self.skip_lf && !bytes.is_empty() {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            self.skip_lf = false;
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..pos]);
            let cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(ev) = self.line_done(&line) {
                out.push(ev);
            }
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(out)
    }

    fn line_done(&mut self, mut line: &[u8]) -> Option<SseEvent> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the last "\n" appended below
            return Some(SseEvent { event, data });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter here
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(input: &[u8]) -> Vec<SseEvent> {
        SseDecoder::new().feed(input).expect("decodes")
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: d.into(),
        }
    }

    #[test]
    fn spec_examples() {
        // WHATWG examples: multi-line data, comments, a field with no colon.
        let evs = all(b": comment\ndata: first\ndata:second\n\ndata\n\nevent: add\ndata: 3\n\n");
        assert_eq!(
            evs,
            [
                data("first\nsecond"),
                data(""),
                SseEvent {
                    event: Some("add".into()),
                    data: "3".into()
                }
            ]
        );
        // Only one leading space is removed; no data means no event.
        assert_eq!(all(b"data:  two\n\nevent: x\n\n"), [data(" two")]);
        // An event without its blank line is not dispatched.
        assert_eq!(all(b"data: pending\n"), []);
        assert_eq!(all(b"\xEF\xBB\xBFdata: bom\n\n"), [data("bom")]);
    }

    #[test]
    fn line_endings_cr_lf_crlf() {
        for input in [
            &b"data: a\r\n\r\ndata: b\r\n\r\n"[..],
            b"data: a\r\rdata: b\r\r",
            b"data: a\n\ndata: b\n\n",
        ] {
            assert_eq!(all(input), [data("a"), data("b")], "{input:?}");
        }
    }

    #[test]
    fn too_long_line_is_an_error() {
        let mut d = SseDecoder::new();
        let big = vec![b'x'; MAX_LINE + 1];
        assert_eq!(d.feed(&big), Err(LineTooLong));
    }

    proptest! {
        /// However the bytes are split into chunks, the events are the same.
        #[test]
        fn chunking_does_not_change_events(
            texts in prop::collection::vec("[a-z {}\":,]{0,12}", 1..8),
            crlf in any::<bool>(),
            cuts in prop::collection::vec(0usize..200, 0..10),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let stream: String = texts
                .iter()
                .map(|t| format!("data: {t}{eol}{eol}"))
                .collect();
            let bytes = stream.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = SseDecoder::new();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                got.extend(d.feed(&bytes[at..c]).expect("decodes"));
                at = c;
            }
            let want: Vec<SseEvent> = texts.iter().map(|t| data(t)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
