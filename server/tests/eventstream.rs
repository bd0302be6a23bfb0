//! Event-stream encoder and decoder against botocore's golden frames, and the
//! decoder's robustness on hostile bytes.

use factory_server::bedrock::eventstream::{
    chunk_event, decode, decode_frame, encode, error_frame, exception_frame, json_event,
    DecodeError, EncodeError, Header, HeaderValue, Message, MAX_HEADERS_LEN, MAX_PAYLOAD_LEN,
};
use factory_server::bedrock::{BedrockError, ErrorKind};
use proptest::prelude::*;

/// The hex dumps of `vectors/es_vectors.txt`, in file order.
fn golden_frames() -> Vec<Vec<u8>> {
    let text = include_str!("vectors/es_vectors.txt");
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("VECTOR") {
            frames.push(Vec::new());
        }
        // Dump lines look like "  0010: 65 6e 74 …".
        let Some((offset, bytes)) = line.trim_start().split_once(": ") else {
            continue;
        };
        if offset.len() != 4 || !offset.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let frame = frames.last_mut().expect("dump before VECTOR line");
        for byte in bytes.split_whitespace() {
            frame.push(u8::from_str_radix(byte, 16).expect("hex byte"));
        }
    }
    assert_eq!(frames.len(), 3);
    frames
}

const LLAMA_CHUNK: &str = r#"{"generation":"Hi","prompt_token_count":null,"generation_token_count":1,"stop_reason":null}"#;

#[test]
fn chunk_event_reproduces_golden_vector_1() {
    let frames = golden_frames();
    assert_eq!(frames[0].len(), 227);
    assert_eq!(chunk_event(LLAMA_CHUNK.as_bytes()).unwrap(), frames[0]);
}

#[test]
fn json_event_reproduces_golden_vector_2() {
    let frames = golden_frames();
    assert_eq!(frames[1].len(), 129);
    let frame = json_event("messageStart", r#"{"p":"abcd","role":"assistant"}"#).unwrap();
    assert_eq!(frame, frames[1]);
}

#[test]
fn exception_frames_reproduce_golden_vector_3() {
    let frames = golden_frames();
    assert_eq!(frames[2].len(), 184);
    let payload = r#"{"message":"boom","originalStatusCode":500,"originalMessage":"x"}"#;
    assert_eq!(
        exception_frame("modelStreamErrorException", payload).unwrap(),
        frames[2]
    );
    let err = BedrockError::new(
        ErrorKind::ModelStreamError {
            original_status_code: Some(500),
            original_message: Some("x".into()),
        },
        "boom",
    );
    assert_eq!(error_frame(&err).unwrap(), frames[2]);
}

#[test]
fn golden_vectors_decode_to_what_botocore_saw() {
    let frames = golden_frames();
    let chunk = decode(&frames[0]).unwrap();
    assert_eq!(chunk.string_header(":event-type"), Some("chunk"));
    assert_eq!(
        chunk.string_header(":content-type"),
        Some("application/json")
    );
    assert_eq!(chunk.string_header(":message-type"), Some("event"));
    let payload: serde_json::Value = serde_json::from_slice(&chunk.payload).unwrap();
    let inner = base64_decode(payload["bytes"].as_str().unwrap());
    assert_eq!(inner, LLAMA_CHUNK.as_bytes());

    let start = decode(&frames[1]).unwrap();
    assert_eq!(start.string_header(":event-type"), Some("messageStart"));
    assert_eq!(start.payload, br#"{"p":"abcd","role":"assistant"}"#);

    let exception = decode(&frames[2]).unwrap();
    assert_eq!(
        exception.string_header(":exception-type"),
        Some("modelStreamErrorException")
    );
    assert_eq!(exception.string_header(":message-type"), Some("exception"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[test]
fn unmodelled_errors_become_error_frames() {
    let err = BedrockError::new(ErrorKind::AccessDenied, "no");
    let message = decode(&error_frame(&err).unwrap()).unwrap();
    assert_eq!(message.string_header(":message-type"), Some("error"));
    assert_eq!(
        message.string_header(":error-code"),
        Some("AccessDeniedException")
    );
    assert_eq!(message.string_header(":error-message"), Some("no"));
    assert!(message.payload.is_empty());
}

#[test]
fn frames_are_split_from_a_stream_buffer() {
    let frames = golden_frames();
    let stream: Vec<u8> = frames.concat();
    let mut rest = &stream[..];
    let mut decoded = Vec::new();
    while let Some((message, used)) = decode_frame(rest).unwrap() {
        decoded.push(message);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(decoded.len(), 3);
    assert_eq!(
        decode(&stream),
        Err(DecodeError::TrailingBytes(129 + 184)),
        "decode wants exactly one message"
    );
}

#[test]
fn every_header_type_round_trips() {
    let message = Message {
        headers: vec![
            Header {
                name: "t".into(),
                value: HeaderValue::Bool(true),
            },
            Header {
                name: "f".into(),
                value: HeaderValue::Bool(false),
            },
            Header {
                name: "byte".into(),
                value: HeaderValue::Byte(-3),
            },
            Header {
                name: "short".into(),
                value: HeaderValue::Short(-300),
            },
            Header {
                name: "int".into(),
                value: HeaderValue::Int(-70_000),
            },
            Header {
                name: "long".into(),
                value: HeaderValue::Long(i64::MIN),
            },
            Header {
                name: "bytes".into(),
                value: HeaderValue::ByteArray(vec![0, 255]),
            },
            Header::string("string", "héllo"),
            Header {
                name: "ts".into(),
                value: HeaderValue::Timestamp(1_704_067_200_000),
            },
            Header {
                name: "uuid".into(),
                value: HeaderValue::Uuid([7; 16]),
            },
        ],
        payload: b"{}".to_vec(),
    };
    assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
}

#[test]
fn encoder_rejects_what_decoders_would_refuse() {
    let with_header = |header: Header| Message {
        headers: vec![header],
        payload: Vec::new(),
    };
    assert_eq!(
        encode(&with_header(Header::string("", "x"))),
        Err(EncodeError::HeaderNameLength(0))
    );
    assert_eq!(
        encode(&with_header(Header::string("n".repeat(256), "x"))),
        Err(EncodeError::HeaderNameLength(256))
    );
    assert!(encode(&with_header(Header::string("n".repeat(255), "x"))).is_ok());
    assert!(matches!(
        encode(&with_header(Header::string("n", "v".repeat(65_536)))),
        Err(EncodeError::HeaderValueTooLong { len: 65_536, .. })
    ));
    let duplicate = Message {
        headers: vec![Header::string("a", "1"), Header::string("a", "2")],
        payload: Vec::new(),
    };
    assert_eq!(
        encode(&duplicate),
        Err(EncodeError::DuplicateHeader("a".into()))
    );
    let too_many = Message {
        headers: (0..3)
            .map(|i| Header::string(format!("h{i}"), "v".repeat(60_000)))
            .collect(),
        payload: Vec::new(),
    };
    assert!(matches!(
        encode(&too_many),
        Err(EncodeError::HeadersTooLong(_))
    ));
    let big = Message {
        headers: Vec::new(),
        payload: vec![0; MAX_PAYLOAD_LEN + 1],
    };
    assert_eq!(
        encode(&big),
        Err(EncodeError::PayloadTooLong(MAX_PAYLOAD_LEN + 1))
    );
}

/// A frame around raw header bytes, with correct CRCs, to reach the header parser
/// with input the encoder would never produce.
fn frame_raw(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = 16 + headers.len() + payload.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

/// Just a prelude (12 bytes, correct CRC) declaring the given lengths.
fn prelude(total: u32, headers: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&headers.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

#[test]
fn malformed_headers_are_reported() {
    let dup = [1, b'a', 1, 1, b'a', 0];
    assert_eq!(
        decode(&frame_raw(&dup, b"")),
        Err(DecodeError::DuplicateHeader("a".into()))
    );
    assert_eq!(
        decode(&frame_raw(&[1, b'a', 10], b"")),
        Err(DecodeError::UnknownHeaderType {
            value_type: 10,
            offset: 2
        })
    );
    assert_eq!(
        decode(&frame_raw(&[0, 0], b"")),
        Err(DecodeError::EmptyHeaderName(0))
    );
    assert_eq!(
        decode(&frame_raw(&[1, 0xff, 0], b"")),
        Err(DecodeError::InvalidUtf8(1))
    );
    assert_eq!(
        decode(&frame_raw(&[1, b'a', 7, 0, 5, b'x'], b"")),
        Err(DecodeError::HeaderTruncated(5))
    );
    assert_eq!(
        decode(&frame_raw(&[1, b'a', 4, 0, 0], b"")),
        Err(DecodeError::HeaderTruncated(3))
    );
    assert_eq!(
        decode(&frame_raw(&[5, b'a'], b"")),
        Err(DecodeError::HeaderTruncated(1))
    );
}

#[test]
fn bad_lengths_are_reported_from_the_prelude_alone() {
    assert_eq!(
        decode_frame(&prelude(15, 0)),
        Err(DecodeError::TotalLengthTooSmall(15))
    );
    assert_eq!(
        decode_frame(&prelude(100, 85)),
        Err(DecodeError::HeadersExceedMessage {
            headers_len: 85,
            total_len: 100
        })
    );
    let headers = MAX_HEADERS_LEN as u32 + 1;
    assert_eq!(
        decode_frame(&prelude(u32::MAX, headers)),
        Err(DecodeError::HeadersTooLong(headers))
    );
    assert_eq!(
        decode_frame(&prelude(u32::MAX, 0)),
        Err(DecodeError::PayloadTooLong(u32::MAX as usize - 16))
    );
    assert!(matches!(
        decode_frame(&[0, 0, 0, 16, 0, 0, 0, 0, 1, 2, 3, 4]),
        Err(DecodeError::PreludeCrcMismatch { .. })
    ));
}

#[test]
fn every_truncation_is_reported() {
    let frame = golden_frames().swap_remove(0);
    for len in 0..frame.len() {
        assert_eq!(decode_frame(&frame[..len]), Ok(None), "len {len}");
        let needed = if len < 4 { 12 } else { frame.len() };
        assert_eq!(
            decode(&frame[..len]),
            Err(DecodeError::Truncated {
                needed,
                available: len
            }),
            "len {len}"
        );
    }
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        any::<bool>().prop_map(HeaderValue::Bool),
        any::<i8>().prop_map(HeaderValue::Byte),
        any::<i16>().prop_map(HeaderValue::Short),
        any::<i32>().prop_map(HeaderValue::Int),
        any::<i64>().prop_map(HeaderValue::Long),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(HeaderValue::ByteArray),
        "\\PC{0,40}".prop_map(HeaderValue::String),
        any::<i64>().prop_map(HeaderValue::Timestamp),
        any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let headers = proptest::collection::btree_map("[:a-zA-Z0-9_-]{1,20}", header_value(), 0..8);
    let payload = proptest::collection::vec(any::<u8>(), 0..512);
    (headers, payload).prop_map(|(headers, payload)| Message {
        headers: headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect(),
        payload,
    })
}

proptest! {
    #[test]
    fn decode_inverts_encode(message in message()) {
        let bytes = encode(&message).unwrap();
        prop_assert_eq!(decode(&bytes), Ok(message.clone()));
        prop_assert_eq!(decode_frame(&bytes), Ok(Some((message, bytes.len()))));
    }

    #[test]
    fn any_single_byte_corruption_is_an_error(
        message in message(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = encode(&message).unwrap();
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        // CRC-32 catches every error confined to 32 consecutive bits.
        prop_assert!(decode(&bytes).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn random_headers_in_valid_frames_never_panic(
        headers in proptest::collection::vec(any::<u8>(), 0..128),
        payload in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let _ = decode(&frame_raw(&headers, &payload));
    }

    #[test]
    fn chunk_events_carry_the_model_bytes(chunk in proptest::collection::vec(any::<u8>(), 0..300)) {
        let message = decode(&chunk_event(&chunk).unwrap()).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        prop_assert_eq!(base64_decode(payload["bytes"].as_str().unwrap()), chunk);
    }
}

#[test]
fn long_error_messages_are_truncated_not_refused() {
    let err = BedrockError::new(ErrorKind::AccessDenied, "é".repeat(40_000));
    let message = decode(&error_frame(&err).unwrap()).unwrap();
    let sent = message.string_header(":error-message").unwrap();
    assert_eq!(sent.len(), 65_534);
    assert!(err.message.starts_with(sent));
}
