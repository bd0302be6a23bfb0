//! Bytes → message. Input is untrusted: every length is checked, nothing panics.

use super::{
    Header, HeaderValue, Message, MAX_HEADERS_LEN, MAX_PAYLOAD_LEN, MIN_MESSAGE_LEN, PRELUDE_LEN,
};

/// Why bytes are not a valid event-stream message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the message does.
    #[error("truncated message: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the message needs (12 while the prelude itself is incomplete).
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// The prelude CRC does not match the first 8 bytes.
    #[error("prelude CRC mismatch: message says {expected:#010x}, computed {computed:#010x}")]
    PreludeCrcMismatch {
        /// CRC carried by the message.
        expected: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// The message CRC does not match the message bytes.
    #[error("message CRC mismatch: message says {expected:#010x}, computed {computed:#010x}")]
    MessageCrcMismatch {
        /// CRC carried by the message.
        expected: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// The total length cannot even hold prelude and CRC.
    #[error("total length {0} is below the 16-byte minimum")]
    TotalLengthTooSmall(u32),
    /// The headers length does not fit in the total length.
    #[error("headers length {headers_len} does not fit in total length {total_len}")]
    HeadersExceedMessage {
        /// Declared headers length.
        headers_len: u32,
        /// Declared total length.
        total_len: u32,
    },
    /// Headers over botocore's 128 KiB limit.
    #[error("headers length {0} exceeds the {MAX_HEADERS_LEN}-byte limit")]
    HeadersTooLong(u32),
    /// Payload over botocore's 24 MiB limit.
    #[error("payload length {0} exceeds the {MAX_PAYLOAD_LEN}-byte limit")]
    PayloadTooLong(usize),
    /// A header runs past the end of the headers section.
    #[error("header truncated at offset {0} of the headers section")]
    HeaderTruncated(usize),
    /// A header name of length zero.
    #[error("empty header name at offset {0} of the headers section")]
    EmptyHeaderName(usize),
    /// A header name or string value that is not UTF-8.
    #[error("header at offset {0} of the headers section is not valid UTF-8")]
    InvalidUtf8(usize),
    /// A value type byte outside 0..=9.
    #[error("unknown header value type {value_type} at offset {offset} of the headers section")]
    UnknownHeaderType {
        /// The type byte.
        value_type: u8,
        /// Where it was.
        offset: usize,
    },
    /// The same header name twice.
    #[error("duplicate header {0:?}")]
    DuplicateHeader(String),
    /// Bytes left after a complete message where exactly one was expected.
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
}

/// Decodes exactly one message occupying all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    match decode_frame(bytes)? {
        Some((message, used)) if used == bytes.len() => Ok(message),
        Some((_, used)) => Err(DecodeError::TrailingBytes(bytes.len() - used)),
        None => Err(DecodeError::Truncated {
            needed: declared_len(bytes).unwrap_or(PRELUDE_LEN),
            available: bytes.len(),
        }),
    }
}

/// Decodes the message at the front of a stream buffer: `Ok(None)` means more bytes
/// are needed, `Ok(Some((message, used)))` consumed the first `used` bytes.
///
/// The prelude is validated as soon as it is complete, so a corrupt or oversized
/// length is reported at once instead of waiting for bytes that never come.
pub fn decode_frame(bytes: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let (Some(total_len), Some(headers_len), Some(prelude_crc)) =
        (be_u32(bytes, 0), be_u32(bytes, 4), be_u32(bytes, 8))
    else {
        return Ok(None);
    };
    let computed = crc32fast::hash(&bytes[..8]);
    if computed != prelude_crc {
        return Err(DecodeError::PreludeCrcMismatch {
            expected: prelude_crc,
            computed,
        });
    }
    let (total, headers) = (total_len as usize, headers_len as usize);
    if total < MIN_MESSAGE_LEN {
        return Err(DecodeError::TotalLengthTooSmall(total_len));
    }
    if headers > MAX_HEADERS_LEN {
        return Err(DecodeError::HeadersTooLong(headers_len));
    }
    let Some(payload_len) = total.checked_sub(MIN_MESSAGE_LEN + headers) else {
        return Err(DecodeError::HeadersExceedMessage {
            headers_len,
            total_len,
        });
    };
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(DecodeError::PayloadTooLong(payload_len));
    }
    let Some(message) = bytes.get(..total) else {
        return Ok(None);
    };
    let crc_at = total - 4;
    let computed = crc32fast::hash(&message[..crc_at]);
    let expected = be_u32(message, crc_at).unwrap_or_default();
    if computed != expected {
        return Err(DecodeError::MessageCrcMismatch { expected, computed });
    }
    let headers_end = PRELUDE_LEN + headers;
    let headers = parse_headers(&message[PRELUDE_LEN..headers_end])?;
    let payload = message[headers_end..crc_at].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

/// The total length a prelude declares, if there are 4 bytes of it.
fn declared_len(bytes: &[u8]) -> Option<usize> {
    be_u32(bytes, 0).map(|n| n as usize)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn parse_headers(section: &[u8]) -> Result<Vec<Header>, DecodeError> {
    let mut cursor = Cursor {
        bytes: section,
        at: 0,
    };
    let mut headers: Vec<Header> = Vec::new();
    while cursor.at < section.len() {
        let start = cursor.at;
        let [name_len] = cursor.array::<1>()?;
        if name_len == 0 {
            return Err(DecodeError::EmptyHeaderName(start));
        }
        let name = cursor.utf8(usize::from(name_len))?;
        let value = parse_value(&mut cursor)?;
        if headers.iter().any(|h| h.name == name) {
            return Err(DecodeError::DuplicateHeader(name));
        }
        headers.push(Header { name, value });
    }
    Ok(headers)
}

fn parse_value(cursor: &mut Cursor<'_>) -> Result<HeaderValue, DecodeError> {
    let offset = cursor.at;
    let [value_type] = cursor.array::<1>()?;
    Ok(match value_type {
        0 => HeaderValue::Bool(true),
        1 => HeaderValue::Bool(false),
        2 => HeaderValue::Byte(i8::from_be_bytes(cursor.array()?)),
        3 => HeaderValue::Short(i16::from_be_bytes(cursor.array()?)),
        4 => HeaderValue::Int(i32::from_be_bytes(cursor.array()?)),
        5 => HeaderValue::Long(i64::from_be_bytes(cursor.array()?)),
        6 => {
            let len = u16::from_be_bytes(cursor.array()?);
            HeaderValue::ByteArray(cursor.take(usize::from(len))?.to_vec())
        }
        7 => {
            let len = u16::from_be_bytes(cursor.array()?);
            HeaderValue::String(cursor.utf8(usize::from(len))?)
        }
        8 => HeaderValue::Timestamp(i64::from_be_bytes(cursor.array()?)),
        9 => HeaderValue::Uuid(cursor.array()?),
        value_type => return Err(DecodeError::UnknownHeaderType { value_type, offset }),
    })
}

/// Bounds-checked reads from the headers section.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.saturating_add(n);
        let taken = self
            .bytes
            .get(self.at..end)
            .ok_or(DecodeError::HeaderTruncated(self.at))?;
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn utf8(&mut self, n: usize) -> Result<String, DecodeError> {
        let start = self.at;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8(start))
    }
}
