//! Message → bytes.

use super::{HeaderValue, Message, MAX_HEADERS_LEN, MAX_PAYLOAD_LEN, MIN_MESSAGE_LEN};

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Header names are 1..=255 bytes.
    #[error("header name must be 1 to 255 bytes, got {0}")]
    HeaderNameLength(usize),
    /// String and byte-array values carry a u16 length.
    #[error("header {name:?}: value of {len} bytes exceeds 65535")]
    HeaderValueTooLong {
        /// The header's name.
        name: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// The decoder (ours and botocore's) rejects repeated names.
    #[error("duplicate header {0:?}")]
    DuplicateHeader(String),
    /// botocore refuses headers sections over 128 KiB.
    #[error("headers of {0} bytes exceed the {MAX_HEADERS_LEN}-byte limit")]
    HeadersTooLong(usize),
    /// botocore refuses payloads over 24 MiB.
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_LEN}-byte limit")]
    PayloadTooLong(usize),
}

/// Encodes `message` into a new buffer.
pub fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `message` to `out`; on error `out` is unchanged.
pub fn encode_into(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let headers_len = validate(message)?;
    let payload_len = message.payload.len();
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(EncodeError::PayloadTooLong(payload_len));
    }
    // Both limits keep the total far below u32::MAX, so the casts below are lossless.
    let total_len = MIN_MESSAGE_LEN + headers_len + payload_len;
    let start = out.len();
    out.reserve(total_len);
    out.extend_from_slice(&(total_len as u32).to_be_bytes());
    out.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    for header in &message.headers {
        out.push(header.name.len() as u8);
        out.extend_from_slice(header.name.as_bytes());
        write_value(&header.value, out);
    }
    out.extend_from_slice(&message.payload);
    let message_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&message_crc.to_be_bytes());
    Ok(())
}

/// Checks names, value sizes and uniqueness; returns the encoded headers length.
fn validate(message: &Message) -> Result<usize, EncodeError> {
    let mut len = 0;
    for (i, header) in message.headers.iter().enumerate() {
        let name_len = header.name.len();
        if name_len == 0 || name_len > usize::from(u8::MAX) {
            return Err(EncodeError::HeaderNameLength(name_len));
        }
        if message.headers[..i].iter().any(|h| h.name == header.name) {
            return Err(EncodeError::DuplicateHeader(header.name.clone()));
        }
        let value_len = value_len(&header.value);
        if let HeaderValue::String(_) | HeaderValue::ByteArray(_) = header.value {
            if value_len - 2 > usize::from(u16::MAX) {
                return Err(EncodeError::HeaderValueTooLong {
                    name: header.name.clone(),
                    len: value_len - 2,
                });
            }
        }
        len += 1 + name_len + 1 + value_len;
        if len > MAX_HEADERS_LEN {
            return Err(EncodeError::HeadersTooLong(len));
        }
    }
    Ok(len)
}

/// Encoded size of a value after its type byte.
fn value_len(value: &HeaderValue) -> usize {
    match value {
        HeaderValue::Bool(_) => 0,
        HeaderValue::Byte(_) => 1,
        HeaderValue::Short(_) => 2,
        HeaderValue::Int(_) => 4,
        HeaderValue::Long(_) | HeaderValue::Timestamp(_) => 8,
        HeaderValue::ByteArray(b) => 2 + b.len(),
        HeaderValue::String(s) => 2 + s.len(),
        HeaderValue::Uuid(_) => 16,
    }
}

/// Writes type byte and value; lengths were checked by `validate`.
fn write_value(value: &HeaderValue, out: &mut Vec<u8>) {
    match value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Short(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Long(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::ByteArray(b) => {
            out.push(6);
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(b);
        }
        HeaderValue::String(s) => {
            out.push(7);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        HeaderValue::Timestamp(v) => {
            out.push(8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Uuid(u) => {
            out.push(9);
            out.extend_from_slice(u);
        }
    }
}
