//! Percent-decoding of URI path labels (botocore encodes all but `A-Za-z0-9-._~`).

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_botocore_labels() {
        assert_eq!(
            percent_decode("arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.m%3A0")
                .as_deref(),
            Some("arn:aws:bedrock:us-east-1:1:inference-profile/us.m:0")
        );
        assert_eq!(
            percent_decode("plain-id_1.0~").as_deref(),
            Some("plain-id_1.0~")
        );
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("\u{2713}"));
    }

    #[test]
    fn rejects_broken_escapes() {
        for s in ["%", "%4", "%zz", "%FF", "a%2"] {
            assert_eq!(percent_decode(s), None, "{s}");
        }
    }
}
