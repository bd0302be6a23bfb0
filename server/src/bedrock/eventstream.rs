//! `application/vnd.amazon.eventstream` messages (reference/bedrock-api.md section 4).
//!
//! Framing, all integers big-endian:
//! `total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32`.

mod decode;
mod encode;
mod events;

pub use decode::{decode, decode_frame, DecodeError};
pub use encode::{encode, encode_into, EncodeError};
pub use events::{chunk_event, error_frame, exception_frame, json_event};

/// Bytes of the prelude: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// Bytes of prelude plus trailing message CRC: the smallest possible message.
pub const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;
/// Largest headers section botocore accepts (eventstream.py `_MAX_HEADERS_LENGTH`).
pub const MAX_HEADERS_LEN: usize = 128 * 1024;
/// Largest payload botocore accepts (eventstream.py `_MAX_PAYLOAD_LENGTH`).
pub const MAX_PAYLOAD_LEN: usize = 24 * 1024 * 1024;

/// A header value; the wire type tag is in each variant's doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false), no value bytes.
    Bool(bool),
    /// Type 2, one signed byte.
    Byte(i8),
    /// Type 3, i16.
    Short(i16),
    /// Type 4, i32.
    Int(i32),
    /// Type 5, i64.
    Long(i64),
    /// Type 6, u16 length then bytes.
    ByteArray(Vec<u8>),
    /// Type 7, u16 length then UTF-8: the only type Bedrock sends.
    String(String),
    /// Type 8, i64 milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9, 16 bytes.
    Uuid([u8; 16]),
}

/// One named header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1..=255 bytes of UTF-8.
    pub name: String,
    /// The typed value.
    pub value: HeaderValue,
}

impl Header {
    /// A string (type 7) header.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: HeaderValue::String(value.into()),
        }
    }
}

/// One event-stream message: ordered headers and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Headers in wire order; names are unique.
    pub headers: Vec<Header>,
    /// The payload bytes (JSON for Bedrock).
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of the header called `name`, if present.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// The value of the string header called `name`, if present and a string.
    pub fn string_header(&self, name: &str) -> Option<&str> {
        match self.header(name) {
            Some(HeaderValue::String(s)) => Some(s),
            _ => None,
        }
    }
}
