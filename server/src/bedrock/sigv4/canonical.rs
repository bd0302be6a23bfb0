//! The SigV4 canonical request (reference/bedrock-api.md 8.1 step 4, 8.2 step 6).

use std::fmt::Write as _;

/// Canonical URI: the raw path as received, dot and empty segments removed as
/// botocore's `normalize_url_path` does, then percent-encoded *again* except
/// `A-Za-z0-9-._~/` — so `%3A` becomes `%253A`.
pub(crate) fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = raw_path.ends_with('/') && !segments.is_empty();
    let mut normalized = String::with_capacity(raw_path.len() + 1);
    normalized.push('/');
    normalized.push_str(&segments.join("/"));
    if trailing {
        normalized.push('/');
    }
    encode(normalized.as_bytes(), true)
}

/// Canonical query string: pairs split on `&` and the first `=`, each side
/// percent-decoded then RFC 3986-encoded, sorted by key then value.
pub(crate) fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                encode(&percent_decode(key), false),
                encode(&percent_decode(value), false),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len());
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        let _ = write!(out, "{key}={value}");
    }
    out
}

/// A header value as signed: trimmed, inner whitespace runs collapsed to one space.
pub(crate) fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request text whose SHA-256 goes into the string to sign.
pub(crate) struct CanonicalRequest<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// From `canonical_uri`.
    pub uri: &'a str,
    /// From `canonical_query`.
    pub query: &'a str,
    /// `name:value\n` per signed header, in `SignedHeaders` order.
    pub headers: &'a str,
    /// `SignedHeaders` as sent.
    pub signed_headers: &'a str,
    /// Hex SHA-256 of the body, or the `x-amz-content-sha256` value.
    pub payload_hash: &'a str,
}

impl CanonicalRequest<'_> {
    /// The newline-joined text.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method, self.uri, self.query, self.headers, self.signed_headers, self.payload_hash
        )
    }
}

/// Percent-encodes every byte except RFC 3986 unreserved ones (and `/` if asked).
fn encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays literal.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) if bytes[i] == b'%' => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_encoded_twice() {
        assert_eq!(
            canonical_uri("/model/meta.llama3-8b-instruct-v1%3A0/invoke"),
            "/model/meta.llama3-8b-instruct-v1%253A0/invoke"
        );
        assert_eq!(
            canonical_uri("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/invoke"),
            "/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A1%253Ainference-profile%252Fus.x/invoke"
        );
    }

    #[test]
    fn path_is_normalized_like_botocore() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(canonical_uri("/../.."), "/");
        assert_eq!(canonical_uri("/a b"), "/a%20b");
    }

    #[test]
    fn query_is_sorted_and_reencoded() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("byProvider=meta"), "byProvider=meta");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("flag&x=a%2fb%3A"), "flag=&x=a%2Fb%3A");
        assert_eq!(canonical_query("x=a b&y=%zz"), "x=a%20b&y=%25zz");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(canonical_header_value("  a   b\tc  "), "a b c");
        assert_eq!(canonical_header_value(""), "");
    }
}
