//! Parsing `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.

/// The algorithm name that starts a SigV4 `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of a SigV4 `Authorization` header, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    /// The access key id, first part of `Credential`.
    pub access_key_id: &'a str,
    /// `yyyymmdd` of the credential scope.
    pub scope_date: &'a str,
    /// The scope's region.
    pub region: &'a str,
    /// The scope's service name (`bedrock` for Bedrock).
    pub service: &'a str,
    /// `SignedHeaders` exactly as sent: `;`-separated lowercase names.
    pub signed_headers: &'a str,
    /// `Signature`: 64 lowercase hex digits.
    pub signature: &'a str,
}

impl AuthorizationHeader<'_> {
    /// `yyyymmdd/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }

    /// The signed header names.
    pub fn signed_header_names(&self) -> impl Iterator<Item = &str> {
        self.signed_headers.split(';')
    }
}

/// Parses a SigV4 `Authorization` value; the error says what is wrong, in the
/// style of AWS's `IncompleteSignatureException` messages.
pub fn parse_authorization(value: &str) -> Result<AuthorizationHeader<'_>, String> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_whitespace()))
        .ok_or_else(|| format!("Authorization header must start with '{ALGORITHM} '."))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    // Clients differ in the whitespace after commas; tolerate any.
    for part in rest.split(',').map(str::trim) {
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| format!("Authorization component '{part}' is not key=value."))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(format!("Unknown Authorization component '{key}'.")),
        };
        if slot.replace(val).is_some() {
            return Err(format!("Authorization component '{key}' appears twice."));
        }
    }
    let credential = require(credential, "Credential")?;
    let signed_headers = require(signed_headers, "SignedHeaders")?;
    let signature = require(signature, "Signature")?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, "aws4_request"] = scope[..] else {
        return Err(format!(
            "Credential '{credential}' must be AKID/yyyymmdd/region/service/aws4_request."
        ));
    };
    if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
        return Err(format!("Credential '{credential}' has an empty part."));
    }
    if scope_date.len() != 8 || !scope_date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("Credential date '{scope_date}' is not yyyymmdd."));
    }
    if signed_headers.split(';').any(|name| {
        name.is_empty()
            || name
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b.is_ascii_uppercase())
    }) {
        return Err(format!(
            "SignedHeaders '{signed_headers}' must be ';'-separated lowercase names."
        ));
    }
    let is_lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if signature.len() != 64 || !signature.bytes().all(is_lower_hex) {
        return Err("Signature must be 64 lowercase hex digits.".to_string());
    }
    Ok(AuthorizationHeader {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature,
    })
}

fn require<'a>(slot: Option<&'a str>, key: &str) -> Result<&'a str, String> {
    slot.ok_or_else(|| format!("Authorization header requires '{key}' parameter."))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "cee6a0bc0ceb685d465c8ae238e65b238c366c8a73f84fd03fd039476c3e8f97";

    fn header(credential: &str, signed: &str, sig: &str) -> String {
        format!("AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, Signature={sig}")
    }

    #[test]
    fn parses_the_golden_header() {
        let value = header(
            "AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request",
            "accept;content-type;host;x-amz-date",
            SIG,
        );
        let parsed = parse_authorization(&value).expect("valid");
        assert_eq!(parsed.access_key_id, "AKIDEXAMPLE");
        assert_eq!(parsed.scope_date, "20240101");
        assert_eq!(parsed.region, "us-east-1");
        assert_eq!(parsed.service, "bedrock");
        assert_eq!(parsed.signed_headers, "accept;content-type;host;x-amz-date");
        assert_eq!(parsed.signature, SIG);
        assert_eq!(parsed.scope(), "20240101/us-east-1/bedrock/aws4_request");
    }

    #[test]
    fn tolerates_whitespace_and_order() {
        let value = format!(
            "AWS4-HMAC-SHA256   Signature={SIG},SignedHeaders=host;x-amz-date ,\t Credential=A/20240101/r/bedrock/aws4_request"
        );
        assert!(parse_authorization(&value).is_ok());
    }

    #[test]
    fn rejects_malformed_headers() {
        let cred = "A/20240101/r/bedrock/aws4_request";
        let bad = [
            String::new(),
            "AWS4-HMAC-SHA256".into(),
            "AWS4-HMAC-SHA256Credential=x".into(),
            "AWS4-HMAC-SHA1 Credential=x".into(),
            format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host"),
            format!("AWS4-HMAC-SHA256 Credential={cred}, Signature={SIG}"),
            format!("AWS4-HMAC-SHA256 SignedHeaders=host, Signature={SIG}"),
            format!("AWS4-HMAC-SHA256 Credential={cred}, Credential={cred}, SignedHeaders=host, Signature={SIG}"),
            format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature={SIG}, Extra=1"),
            format!("AWS4-HMAC-SHA256 Credential={cred} SignedHeaders=host, Signature={SIG}"),
            header("A/20240101/r/bedrock", "host", SIG),
            header("A/20240101/r/bedrock/aws4_request/x", "host", SIG),
            header("A/20240101/r/bedrock/aws5_request", "host", SIG),
            header("/20240101/r/bedrock/aws4_request", "host", SIG),
            header("A/2024011/r/bedrock/aws4_request", "host", SIG),
            header("A/2024O101/r/bedrock/aws4_request", "host", SIG),
            header(cred, "", SIG),
            header(cred, "host;;x-amz-date", SIG),
            header(cred, "Host", SIG),
            header(cred, "host", &SIG[1..]),
            header(cred, "host", &SIG.to_uppercase()),
        ];
        for value in bad {
            assert!(parse_authorization(&value).is_err(), "{value:?}");
        }
    }
}
