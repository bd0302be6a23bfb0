//! Stop strings over streamed text.
//!
//! Text arrives in pieces (one detokenized token at a time), and a stop string
//! may straddle pieces, so any tail that could still grow into a stop string
//! is held back until the next piece settles it. Nothing of a stop string,
//! and nothing after it, is ever emitted.

/// Most stop strings one request may have.
pub const MAX_STOPS: usize = 16;
/// Longest stop string, in bytes; also bounds how much text is held back.
pub const MAX_STOP_BYTES: usize = 1024;

/// A stop-string list that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StopError {
    #[error("stop string {0} is empty")]
    Empty(usize),
    #[error("{count} stop strings given; at most {max} are allowed")]
    TooMany { count: usize, max: usize },
    #[error("stop string {index} is {len} bytes; at most {max} are allowed")]
    TooLong {
        index: usize,
        len: usize,
        max: usize,
    },
}

/// What one [`StopMatcher::push`] releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text now certain to be output.
    pub emit: String,
    /// Index of the stop string that just matched, if one did.
    pub stopped: Option<usize>,
}

/// Finds the first stop string in a stream of text, holding back what might
/// be the start of one.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Longest stop string; a held-back tail is always shorter than this.
    longest: usize,
    /// Text received but not yet emitted.
    held: String,
    /// Set once a stop string matched or the stream was finished.
    done: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (possibly none); rejects empty strings, more
    /// than [`MAX_STOPS`] strings, or strings over [`MAX_STOP_BYTES`].
    pub fn new(stops: Vec<String>) -> Result<Self, StopError> {
        if stops.len() > MAX_STOPS {
            return Err(StopError::TooMany {
                count: stops.len(),
                max: MAX_STOPS,
            });
        }
        for (index, s) in stops.iter().enumerate() {
            if s.is_empty() {
                return Err(StopError::Empty(index));
            }
            if s.len() > MAX_STOP_BYTES {
                return Err(StopError::TooLong {
                    index,
                    len: s.len(),
                    max: MAX_STOP_BYTES,
                });
            }
        }
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Ok(Self {
            stops,
            longest,
            held: String::new(),
            done: false,
        })
    }

    /// Adds the next piece of text; returns what can now be emitted and
    /// whether a stop string completed. After a stop, returns nothing.
    pub fn push(&mut self, text: &str) -> StopStep {
        if self.done {
            return StopStep::default();
        }
        if self.stops.is_empty() {
            // Nothing can match, so nothing is ever held.
            return StopStep {
                emit: text.to_owned(),
                stopped: None,
            };
        }
        self.held.push_str(text);
        // Emitted text never holds the start of a stop string, so every
        // match lies inside `held`. Earliest end wins, then earliest start,
        // then the lower index (identical strings).
        let first = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at + s.len(), at, i)))
            .min();
        if let Some((_, start, index)) = first {
            self.done = true;
            let mut emit = std::mem::take(&mut self.held);
            emit.truncate(start);
            return StopStep {
                emit,
                stopped: Some(index),
            };
        }
        let keep = self.undecided_from();
        let rest = self.held.split_off(keep);
        StopStep {
            emit: std::mem::replace(&mut self.held, rest),
            stopped: None,
        }
    }

    /// Ends the stream (generation stopped for another reason) and returns
    /// the held-back text; the matcher is spent afterwards.
    pub fn finish(&mut self) -> String {
        self.done = true;
        std::mem::take(&mut self.held)
    }

    /// Byte offset of the earliest tail of `held` that is a proper prefix of
    /// some stop string (so it may yet complete one); `held.len()` if none.
    fn undecided_from(&self) -> usize {
        let len = self.held.len();
        // A proper prefix is shorter than the longest stop string.
        let lowest = len.saturating_sub(self.longest.saturating_sub(1));
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= lowest)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        let stops = stops.iter().map(|s| s.to_string()).collect();
        match StopMatcher::new(stops) {
            Ok(m) => m,
            Err(e) => panic!("valid stops rejected: {e}"),
        }
    }

    fn step(emit: &str, stopped: Option<usize>) -> StopStep {
        StopStep {
            emit: emit.to_owned(),
            stopped,
        }
    }

    #[test]
    fn a_stop_split_across_pieces_is_held_then_dropped() {
        let mut m = matcher(&["</end>"]);
        assert_eq!(m.push("Hello </"), step("Hello ", None));
        assert_eq!(m.push("en"), step("", None));
        assert_eq!(m.push("d> tail"), step("", Some(0)));
        assert_eq!(m.push("more"), step("", None));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn a_false_start_is_released_once_settled() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("ST"), step("", None));
        assert_eq!(m.push("OX S"), step("STOX ", None));
        assert_eq!(m.finish(), "S");
        assert_eq!(m.push("TOP"), step("", None));
    }

    #[test]
    fn the_earliest_ending_match_wins_then_the_earliest_start() {
        // "bc" completes before "abcd" does.
        let mut m = matcher(&["abcd", "bc"]);
        assert_eq!(m.push("xabcd"), step("xa", Some(1)));
        // Both end at the same byte: the longer one starts first.
        let mut m = matcher(&["bc", "abc"]);
        assert_eq!(m.push("xab"), step("x", None));
        assert_eq!(m.push("c"), step("", Some(1)));
    }

    #[test]
    fn held_text_splits_on_character_boundaries() {
        let mut m = matcher(&["€x"]);
        assert_eq!(m.push("a€"), step("a", None));
        assert_eq!(m.push("€"), step("€", None));
        assert_eq!(m.push("y"), step("€y", None));
        // Shares a leading byte with '€' but is not a prefix of it.
        let mut m = matcher(&["€"]);
        assert_eq!(m.push("₭"), step("₭", None));
    }

    #[test]
    fn no_stops_means_no_hold_back() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("any</"), step("any</", None));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn bad_stop_lists_are_rejected() {
        let many = vec!["x".to_string(); MAX_STOPS + 1];
        assert_eq!(
            StopMatcher::new(many).err(),
            Some(StopError::TooMany {
                count: MAX_STOPS + 1,
                max: MAX_STOPS
            })
        );
        assert_eq!(
            StopMatcher::new(vec!["a".into(), String::new()]).err(),
            Some(StopError::Empty(1))
        );
        let long = "€".repeat(MAX_STOP_BYTES / 3 + 1);
        assert_eq!(
            StopMatcher::new(vec![long.clone()]).err(),
            Some(StopError::TooLong {
                index: 0,
                len: long.len(),
                max: MAX_STOP_BYTES
            })
        );
        assert!(StopMatcher::new(vec!["x".repeat(MAX_STOP_BYTES); MAX_STOPS]).is_ok());
    }

    /// The whole-text answer, by brute force: scan end positions in order
    /// and take the first at which some stop string ends (longest on ties).
    fn reference(text: &str, stops: &[String]) -> (String, Option<usize>) {
        for end in 0..=text.len() {
            let best = stops
                .iter()
                .enumerate()
                .filter(|(_, s)| text.as_bytes()[..end].ends_with(s.as_bytes()))
                .map(|(i, s)| (end - s.len(), i))
                .min();
            if let Some((start, i)) = best {
                return (text[..start].to_owned(), Some(i));
            }
        }
        (text.to_owned(), None)
    }

    /// Pushes `pieces` in order; returns everything emitted and the result.
    fn stream(m: &mut StopMatcher, pieces: &[&str]) -> (String, Option<usize>) {
        let mut out = String::new();
        let mut stopped = None;
        for p in pieces {
            let s = m.push(p);
            out += &s.emit;
            stopped = stopped.or(s.stopped);
        }
        if stopped.is_none() {
            out += &m.finish();
        }
        (out, stopped)
    }

    fn small_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(vec!['a', 'b', '€', '\n']), 0..max)
            .prop_map(|cs| cs.into_iter().collect())
    }

    fn small_stops() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            small_text(4).prop_filter("non-empty", |s| !s.is_empty()),
            0..4,
        )
    }

    /// Splits `text` at the given character positions (any order, clamped).
    fn split<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for c in at.into_iter().chain([text.len()]) {
            pieces.push(&text[prev..c]);
            prev = c;
        }
        pieces
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_split_matches_the_whole_text_and_the_reference(
            text in small_text(40),
            stops in small_stops(),
            cuts in proptest::collection::vec(0usize..64, 0..12),
        ) {
            let want = reference(&text, &stops);
            let Ok(mut whole) = StopMatcher::new(stops.clone()) else {
                return Err(TestCaseError::fail("valid stops rejected"));
            };
            prop_assert_eq!(&stream(&mut whole, &[&text]), &want);
            let Ok(mut pieces) = StopMatcher::new(stops) else {
                return Err(TestCaseError::fail("valid stops rejected"));
            };
            prop_assert_eq!(&stream(&mut pieces, &split(&text, &cuts)), &want);
        }

        #[test]
        fn nothing_emitted_contains_a_stop(
            text in small_text(40),
            stops in small_stops(),
            cuts in proptest::collection::vec(0usize..64, 0..12),
        ) {
            let Ok(mut m) = StopMatcher::new(stops.clone()) else {
                return Err(TestCaseError::fail("valid stops rejected"));
            };
            let (out, _) = stream(&mut m, &split(&text, &cuts));
            for s in &stops {
                prop_assert!(!out.contains(s.as_str()), "{:?} in {:?}", s, out);
            }
        }

        #[test]
        fn without_stops_everything_passes_straight_through(
            text in small_text(40),
            cuts in proptest::collection::vec(0usize..64, 0..12),
        ) {
            let Ok(mut m) = StopMatcher::new(Vec::new()) else {
                return Err(TestCaseError::fail("an empty list rejected"));
            };
            for p in split(&text, &cuts) {
                prop_assert_eq!(m.push(p), step(p, None));
            }
            prop_assert_eq!(m.finish(), "");
        }
    }
}
