//! Incremental detokenization: token bytes in, complete UTF-8 text out.
//!
//! A character may span several tokens (byte-level BPE splits emoji and CJK),
//! so bytes wait here until they form whole characters; text is never emitted
//! half-formed.

/// Buffers token bytes and releases whole UTF-8 characters.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // from_utf8 just proved this prefix valid, so nothing is replaced here.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace them.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever is left becomes replacement characters.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_emoji_split_across_tokens_comes_out_whole() {
        let wave = "🌊".as_bytes();
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(&wave[..1]), "");
        assert_eq!(s.push(&wave[1..3]), "");
        assert_eq!(s.push(&[wave[3], b'!']), "🌊!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn a_truncated_character_at_the_end_becomes_a_replacement() {
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(&"é".as_bytes()[..1]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    proptest! {
        #[test]
        fn any_split_of_valid_text_reassembles_exactly(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..10)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = Utf8Stream::new();
            let mut out = String::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                out += &s.push(&bytes[prev..c]);
                prev = c;
            }
            out += &s.finish();
            prop_assert_eq!(out, text);
        }
    }
}
