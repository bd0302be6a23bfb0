//! SigV4 and bearer verification: botocore's golden request, every single-field
//! tampering, and requests signed by AWS's own `aws-sigv4` crate.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use factory_server::bedrock::bearer::ApiKeys;
use factory_server::bedrock::sigv4::SigV4Verifier;
use factory_server::bedrock::{AuthError, Authenticator, BedrockError, Principal, RequestParts};
use proptest::prelude::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2024-01-01T00:00:00Z, the golden vector's signing time.
const GOLDEN_UNIX: u64 = 1_704_067_200;
const GOLDEN_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date, Signature=cee6a0bc0ceb685d465c8ae238e65b238c366c8a73f84fd03fd039476c3e8f97";
const GOLDEN_CANONICAL: &str = "POST\n/model/meta.llama3-8b-instruct-v1%253A0/invoke\n\naccept:application/json\ncontent-type:application/json\nhost:127.0.0.1:8080\nx-amz-date:20240101T000000Z\n\naccept;content-type;host;x-amz-date\n14479f4e87d340fe0ca0d522d87a5b3a028ebb1af24fbb8d3ef4553044fc6db6";
const GOLDEN_STRING_TO_SIGN: &str = "AWS4-HMAC-SHA256\n20240101T000000Z\n20240101/us-east-1/bedrock/aws4_request\n2de7e7a572436415cc0f75001488a2e0d2e770024533316155c55db0a8495a72";

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

fn verifier() -> SigV4Verifier<HashMap<String, String>> {
    SigV4Verifier::new(HashMap::from([(AKID.to_string(), SECRET.to_string())]))
}

/// The golden request as an owned, editable header list.
struct Golden {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Golden {
    fn new() -> Self {
        let headers = [
            ("Host", "127.0.0.1:8080"),
            ("Accept-Encoding", "identity"),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("User-Agent", "Boto3/1.43.11 md/Botocore#1.43.11"),
            ("X-Amz-Date", "20240101T000000Z"),
            ("Authorization", GOLDEN_AUTH),
            (
                "amz-sdk-invocation-id",
                "5b31dcad-4775-4441-bfe4-597d8e6d02fc",
            ),
            ("amz-sdk-request", "attempt=1"),
            ("Content-Length", "15"),
        ];
        Self {
            method: "POST".into(),
            path: "/model/meta.llama3-8b-instruct-v1%3A0/invoke".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: br#"{"prompt":"hi"}"#.to_vec(),
        }
    }

    fn set(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn verify_with(
        &self,
        verifier: &SigV4Verifier<HashMap<String, String>>,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = RequestParts {
            method: &self.method,
            raw_path: &self.path,
            raw_query: &self.query,
            headers: &headers,
            body: &self.body,
        };
        verifier.verify(&request, now).map(|identity| {
            assert_eq!(identity.access_key_id, AKID);
        })
    }

    fn verify(&self) -> Result<(), AuthError> {
        self.verify_with(&verifier(), at(GOLDEN_UNIX))
    }
}

fn assert_mismatch(result: Result<(), AuthError>) {
    match result {
        Err(AuthError::SignatureMismatch { .. }) => {}
        other => panic!("expected SignatureMismatch, got {other:?}"),
    }
}

#[test]
fn golden_vector_verifies() {
    assert_eq!(Golden::new().verify(), Ok(()));
}

#[test]
fn golden_vector_verifies_within_five_minutes_either_way() {
    let golden = Golden::new();
    for now in [GOLDEN_UNIX - 300, GOLDEN_UNIX + 300] {
        assert_eq!(golden.verify_with(&verifier(), at(now)), Ok(()));
    }
}

#[test]
fn header_names_match_case_insensitively_and_unsigned_headers_are_ignored() {
    let golden = Golden::new()
        .without("Accept")
        .set("ACCEPT", "application/json")
        .set("amz-sdk-request", "ttl=20240101T000100Z; attempt=2; max=5")
        .set("X-Forwarded-For", "10.0.0.1");
    assert_eq!(golden.verify(), Ok(()));
}

#[test]
fn header_values_are_whitespace_normalized() {
    assert_eq!(
        Golden::new().set("Accept", "  application/json ").verify(),
        Ok(())
    );
}

#[test]
fn correct_content_sha256_header_is_accepted() {
    let golden = Golden::new().set(
        "x-amz-content-sha256",
        "14479f4e87d340fe0ca0d522d87a5b3a028ebb1af24fbb8d3ef4553044fc6db6",
    );
    assert_eq!(golden.verify(), Ok(()));
}

#[test]
fn mismatch_reports_the_canonical_strings_botocore_used() {
    let mut golden = Golden::new();
    golden.body = br#"{"prompt":"hI"}"#.to_vec();
    let Err(AuthError::SignatureMismatch {
        canonical_request,
        string_to_sign,
    }) = golden.verify()
    else {
        panic!("expected a mismatch");
    };
    // Only the payload hash line differs from the golden canonical request.
    let golden_lines: Vec<&str> = GOLDEN_CANONICAL.lines().collect();
    let lines: Vec<&str> = canonical_request.lines().collect();
    assert_eq!(
        lines[..lines.len() - 1],
        golden_lines[..golden_lines.len() - 1]
    );
    assert_ne!(lines.last(), golden_lines.last());
    assert!(string_to_sign.starts_with("AWS4-HMAC-SHA256\n20240101T000000Z\n"));

    // And with the real body, the texts are exactly botocore's: checked via another
    // secret, which changes only the final HMAC.
    let other = SigV4Verifier::new(HashMap::from([(AKID.to_string(), "other".to_string())]));
    let Err(AuthError::SignatureMismatch {
        canonical_request,
        string_to_sign,
    }) = Golden::new().verify_with(&other, at(GOLDEN_UNIX))
    else {
        panic!("expected a mismatch");
    };
    assert_eq!(canonical_request, GOLDEN_CANONICAL);
    assert_eq!(string_to_sign, GOLDEN_STRING_TO_SIGN);
}

#[test]
fn any_single_change_breaks_the_signature() {
    assert_mismatch(Golden::new().set("Accept", "text/plain").verify());
    assert_mismatch(
        Golden::new()
            .set("Content-Type", "application/jsonx")
            .verify(),
    );
    assert_mismatch(Golden::new().set("Host", "127.0.0.1:8081").verify());
    assert_mismatch(Golden::new().set("Host", "127.0.0.1").verify());
    // A repeated signed header is signed as one comma-joined value.
    let mut repeated = Golden::new();
    repeated
        .headers
        .push(("Accept".into(), "application/json".into()));
    assert_mismatch(repeated.verify());

    for i in 0..15 {
        let mut golden = Golden::new();
        golden.body[i] ^= 1;
        assert_mismatch(golden.verify());
    }
    let mut golden = Golden::new();
    golden.body.push(b' ');
    assert_mismatch(golden.verify());

    for path in [
        "/model/meta.llama3-8b-instruct-v1:0/invoke",
        "/model/meta.llama3-8b-instruct-v1%3a0/invoke",
        "/model/meta.llama3-8b-instruct-v1%3A0/converse",
        "/model/meta.llama3-8b-instruct-v1%3A1/invoke",
    ] {
        let mut golden = Golden::new();
        golden.path = path.into();
        assert_mismatch(golden.verify());
    }
    let mut golden = Golden::new();
    golden.query = "a=b".into();
    assert_mismatch(golden.verify());
    let mut golden = Golden::new();
    golden.method = "PUT".into();
    assert_mismatch(golden.verify());

    let other = SigV4Verifier::new(HashMap::from([(
        AKID.to_string(),
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz".to_string(),
    )]));
    assert_mismatch(Golden::new().verify_with(&other, at(GOLDEN_UNIX)));

    let mut signature_flipped = GOLDEN_AUTH.to_string();
    signature_flipped.pop();
    signature_flipped.push('8');
    assert_mismatch(
        Golden::new()
            .set("Authorization", &signature_flipped)
            .verify(),
    );
    // The region is part of the scope, hence of the key.
    let other_region = GOLDEN_AUTH.replace("us-east-1", "us-west-2");
    assert_mismatch(Golden::new().set("Authorization", &other_region).verify());
    // Signing fewer headers than the client did changes the canonical request.
    let fewer = GOLDEN_AUTH.replace("accept;content-type;", "content-type;");
    assert_mismatch(Golden::new().set("Authorization", &fewer).verify());
}

#[test]
fn clock_skew_beyond_five_minutes_is_rejected() {
    let golden = Golden::new();
    let expired = golden.verify_with(&verifier(), at(GOLDEN_UNIX + 301));
    assert_eq!(
        expired,
        Err(AuthError::SignatureExpired {
            signed: "20240101T000000Z".into(),
            now: "20240101T000501Z".into(),
            limit: "20240101T000001Z".into(),
        })
    );
    let err = BedrockError::from(expired.unwrap_err());
    assert_eq!(err.status(), 403);
    assert_eq!(err.kind.code(), "InvalidSignatureException");
    assert_eq!(
        err.message,
        "Signature expired: 20240101T000000Z is now earlier than 20240101T000001Z (20240101T000501Z - 5 min.)"
    );

    let early = golden.verify_with(&verifier(), at(GOLDEN_UNIX - 301));
    assert!(matches!(
        early,
        Err(AuthError::SignatureNotYetCurrent { .. })
    ));
    let err = BedrockError::from(early.unwrap_err());
    assert_eq!(
        err.message,
        "Signature not yet current: 20240101T000000Z is still later than 20231231T235959Z (20231231T235459Z + 5 min.)"
    );
}

/// One tampering, the variant it must produce, and the Bedrock code and status.
fn expect_error(golden: Golden, want: AuthError, code: &str, status: u16) {
    let got = golden.verify();
    assert_eq!(got, Err(want.clone()));
    let err = BedrockError::from(want);
    assert_eq!((err.kind.code(), err.status()), (code, status), "{err}");
}

#[test]
fn each_failure_has_its_own_variant_and_bedrock_error() {
    let auth = |from: &str, to: &str| GOLDEN_AUTH.replace(from, to);
    expect_error(
        Golden::new().without("Authorization"),
        AuthError::MissingAuthorization,
        "MissingAuthenticationTokenException",
        403,
    );
    let Err(malformed) = Golden::new()
        .set("Authorization", &auth(", Signature", " Signature"))
        .verify()
    else {
        panic!("malformed header verified");
    };
    assert!(matches!(malformed, AuthError::MalformedAuthorization(_)));
    let err = BedrockError::from(malformed);
    assert_eq!(
        (err.kind.code(), err.status()),
        ("IncompleteSignatureException", 400)
    );
    expect_error(
        Golden::new().set("Authorization", &auth("AKIDEXAMPLE", "AKIDOTHER")),
        AuthError::UnknownAccessKey("AKIDOTHER".into()),
        "UnrecognizedClientException",
        403,
    );
    expect_error(
        Golden::new().set("Authorization", &auth("/bedrock/", "/bedrock-runtime/")),
        AuthError::WrongService("bedrock-runtime".into()),
        "InvalidSignatureException",
        403,
    );
    expect_error(
        Golden::new().without("X-Amz-Date"),
        AuthError::MissingDate,
        "IncompleteSignatureException",
        400,
    );
    expect_error(
        Golden::new().set("X-Amz-Date", "2024-01-01T00:00:00Z"),
        AuthError::MalformedDate("2024-01-01T00:00:00Z".into()),
        "IncompleteSignatureException",
        400,
    );
    expect_error(
        Golden::new().set("Authorization", &auth("/20240101/", "/20240102/")),
        AuthError::ScopeDateMismatch {
            scope_date: "20240102".into(),
            request_date: "20240101T000000Z".into(),
        },
        "InvalidSignatureException",
        403,
    );
    expect_error(
        Golden::new().set("Authorization", &auth("host;", "")),
        AuthError::HostNotSigned,
        "InvalidSignatureException",
        403,
    );
    expect_error(
        Golden::new().without("Accept"),
        AuthError::MissingSignedHeader("accept".into()),
        "InvalidSignatureException",
        403,
    );
    expect_error(
        Golden::new().set("x-amz-content-sha256", &"0".repeat(64)),
        AuthError::ContentSha256Mismatch,
        "ValidationException",
        400,
    );
    let err = BedrockError::from(AuthError::SignatureMismatch {
        canonical_request: String::new(),
        string_to_sign: String::new(),
    });
    assert_eq!(
        (err.kind.code(), err.status()),
        ("InvalidSignatureException", 403)
    );
    assert!(err
        .message
        .starts_with("The request signature we calculated does not match"));
}

#[test]
fn region_allow_list_is_enforced() {
    let golden = Golden::new();
    let only_west = verifier().with_allowed_regions(["us-west-2"]);
    let got = golden.verify_with(&only_west, at(GOLDEN_UNIX));
    assert_eq!(got, Err(AuthError::RegionNotAllowed("us-east-1".into())));
    let err = BedrockError::from(got.unwrap_err());
    assert_eq!(
        (err.kind.code(), err.status()),
        ("InvalidSignatureException", 403)
    );
    let both = verifier().with_allowed_regions(["us-west-2", "us-east-1"]);
    assert_eq!(golden.verify_with(&both, at(GOLDEN_UNIX)), Ok(()));
}

/// The boto3 requests in `vectors/captured.txt`: temporary credentials (a signed
/// `X-Amz-Security-Token`), another region, GET with a query string. The capture
/// does not record the secret; these were signed with the secret `secret`.
#[test]
fn captured_boto3_requests_verify() {
    let text = include_str!("vectors/captured.txt");
    let mut checked = 0;
    for raw in text.split("\n-----\n") {
        let Some((head, body)) = raw.split_once("\n\n") else {
            continue;
        };
        let mut lines = head.lines();
        let Some(request_line) = lines.next() else {
            continue;
        };
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(": ")).collect();
        let content_length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("content length"));
        let request = RequestParts {
            method,
            raw_path: path,
            raw_query: query,
            headers: &headers,
            body: &body.as_bytes()[..content_length],
        };
        let date = request.header("x-amz-date").expect("date");
        assert_eq!(date, "20261124T152131Z");
        let now = UNIX_EPOCH + Duration::from_secs(1_795_533_691);
        let verifier =
            SigV4Verifier::new(HashMap::from([(AKID.to_string(), "secret".to_string())]));
        let identity = verifier
            .verify(&request, now)
            .unwrap_or_else(|e| panic!("{request_line}: {e:?}"));
        assert_eq!(identity.region, "us-west-2");
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn authenticator_dispatches_on_the_scheme() {
    let mut keys = ApiKeys::new();
    keys.insert("team-a", "bedrock-api-key-abc");
    let auth = Authenticator::new(Some(verifier()), keys.clone());
    let golden = Golden::new();
    let headers: Vec<(&str, &str)> = golden
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut request = RequestParts {
        method: "POST",
        raw_path: &golden.path,
        raw_query: "",
        headers: &headers,
        body: &golden.body,
    };
    let principal = auth.authenticate(&request, at(GOLDEN_UNIX)).unwrap();
    assert!(matches!(principal, Principal::AccessKey(id) if id.region == "us-east-1"));

    let bearer = [("Authorization", "Bearer bedrock-api-key-abc")];
    request.headers = &bearer;
    assert_eq!(
        auth.authenticate(&request, at(GOLDEN_UNIX)),
        Ok(Principal::ApiKey("team-a".into()))
    );
    let wrong = [("Authorization", "Bearer bedrock-api-key-abd")];
    request.headers = &wrong;
    let err = auth.authenticate(&request, at(GOLDEN_UNIX)).unwrap_err();
    assert_eq!(err, AuthError::UnknownApiKey);
    assert_eq!(BedrockError::from(err).status(), 403);
    let basic = [("Authorization", "Basic dXNlcjpwdw==")];
    request.headers = &basic;
    assert!(matches!(
        auth.authenticate(&request, at(GOLDEN_UNIX)),
        Err(AuthError::MalformedAuthorization(_))
    ));
    request.headers = &[];
    assert_eq!(
        auth.authenticate(&request, at(GOLDEN_UNIX)),
        Err(AuthError::MissingAuthorization)
    );

    let bearer_only: Authenticator<HashMap<String, String>> = Authenticator::new(None, keys);
    request.headers = &headers;
    assert_eq!(
        bearer_only.authenticate(&request, at(GOLDEN_UNIX)),
        Err(AuthError::UnknownAccessKey(AKID.into()))
    );
}

/// Signs like an AWS SDK, with AWS's own signer, and returns the headers to send.
fn sign_with_aws_sigv4(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    region: &str,
    time: SystemTime,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let identity = aws_credential_types::Credentials::new(AKID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let uri = format!("http://127.0.0.1:8080{path_and_query}");
    let signable = SignableRequest::new(
        method,
        uri,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("signed").into_parts();
    let mut signed = headers.to_vec();
    for (name, value) in instructions.headers() {
        signed.push((name.to_string(), value.to_string()));
    }
    signed
}

/// A path segment percent-encoded the way botocore renders URI labels.
fn encode_label(label: &str) -> String {
    let mut out = String::new();
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request_parts() -> impl Strategy<Value = (String, String, Vec<(String, String)>, Vec<u8>, String)>
{
    let label = "\\PC{1,24}".prop_filter("not a dot segment", |s| s != "." && s != "..");
    let path = proptest::collection::vec(label, 1..4).prop_map(|segments| {
        let encoded: Vec<String> = segments.iter().map(|s| encode_label(s)).collect();
        format!("/{}", encoded.join("/"))
    });
    let query =
        proptest::collection::vec(("[a-zA-Z]{1,8}", "\\PC{0,12}"), 0..4).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_label(v)))
                .collect::<Vec<_>>()
                .join("&")
        });
    let header_name = "x-[a-z]{1,12}".prop_filter("SDK-managed header", |n| {
        !n.starts_with("x-amz") && n != "x-amzn-trace-id"
    });
    let headers = proptest::collection::btree_map(header_name, "[!-~]([ !-~]{0,30}[!-~])?", 0..5)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    let body = proptest::collection::vec(any::<u8>(), 0..512);
    let region = prop_oneof![
        Just("us-east-1".to_string()),
        Just("eu-west-3".to_string()),
        "[a-z]{2}-[a-z]{4,9}-[1-9]",
    ];
    (path, query, headers, body, region)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_signed_by_aws_sigv4_verify(
        (path, query, extra, body, region) in request_parts(),
        offset in 0u64..=600,
        post in any::<bool>(),
    ) {
        let method = if post { "POST" } else { "GET" };
        let mut headers = vec![
            ("host".to_string(), "127.0.0.1:8080".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        headers.extend(extra);
        let path_and_query = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let signed_at = at(GOLDEN_UNIX);
        let sent = sign_with_aws_sigv4(method, &path_and_query, &headers, &body, &region, signed_at);
        let sent: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let request = RequestParts {
            method,
            raw_path: &path,
            raw_query: &query,
            headers: &sent,
            body: &body,
        };
        // Anywhere within the 5-minute window either side.
        let now = at(GOLDEN_UNIX + offset - 300);
        let identity = verifier().verify(&request, now);
        prop_assert!(identity.is_ok(), "{:?}", identity);
        prop_assert_eq!(identity.unwrap().region, region);
    }
}
