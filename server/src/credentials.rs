//! SigV4 key pairs: from the environment, or generated once and kept (mode
//! 0600) in the state directory so a server with no configured credentials is
//! still not open to everyone. The generated file also holds a bearer API key
//! (`api_key`), for Bedrock bearer auth and OpenAI clients (`OPENAI_API_KEY`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString as _};
use serde::Deserialize;

/// File name of the generated key pair inside the state directory.
pub const FILE_NAME: &str = "credentials.toml";

/// An access key id and its secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    /// The public half, sent in every request's credential scope.
    pub access_key_id: String,
    /// The secret half, never sent.
    pub secret_access_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What the generated file holds: a SigV4 key pair and a bearer API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Generated {
    /// For SigV4 clients (boto3).
    pub pair: KeyPair,
    /// For `Authorization: Bearer` clients (OpenAI's, Bedrock API-key users).
    pub api_key: String,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("pair", &self.pair)
            .finish_non_exhaustive()
    }
}

/// The file's form; files written before API keys existed lack `api_key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    access_key_id: String,
    secret_access_key: String,
    api_key: Option<String>,
}

/// A fresh random bearer API key.
pub fn generate_api_key() -> String {
    format!("fk-{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

/// Why the stored key pair could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The stored file is not a key pair.
    #[error("{path} is not a key pair: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl KeyPair {
    /// A fresh random pair shaped like AWS's (20-character id, 40-character secret).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            access_key_id: format!(
                "FKIA{}",
                Alphanumeric
                    .sample_string(&mut rng, 16)
                    .to_ascii_uppercase()
            ),
            secret_access_key: Alphanumeric.sample_string(&mut rng, 40),
        }
    }

    /// `FACTORY_ACCESS_KEY_ID` and `FACTORY_SECRET_ACCESS_KEY`, when both are set.
    pub fn from_env() -> Option<Self> {
        let id = std::env::var("FACTORY_ACCESS_KEY_ID").ok()?;
        let secret = std::env::var("FACTORY_SECRET_ACCESS_KEY").ok()?;
        (!id.is_empty() && !secret.is_empty()).then_some(Self {
            access_key_id: id,
            secret_access_key: secret,
        })
    }
}

/// `$FACTORY_STATE_DIR`, else `$XDG_STATE_HOME/factory`, else `~/.local/state/factory`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FACTORY_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("factory");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("state").join("factory")
}

/// The credentials stored in `dir`, generating and storing them first if
/// there are none (or adding the API key to a file from before API keys); the
/// flag says whether anything was just generated.
pub fn load_or_create(dir: &Path) -> Result<(Generated, bool), CredentialsError> {
    let path = dir.join(FILE_NAME);
    let io = |action, source| CredentialsError::Io {
        action,
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: Stored =
                toml::from_str(&text).map_err(|e| CredentialsError::Malformed {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let pair = KeyPair {
                access_key_id: stored.access_key_id,
                secret_access_key: stored.secret_access_key,
            };
            if let Some(api_key) = stored.api_key {
                return Ok((Generated { pair, api_key }, false));
            }
            let generated = Generated {
                pair,
                api_key: generate_api_key(),
            };
            // Same permissions, written beside and renamed over: never half a file.
            let tmp = dir.join(format!("{FILE_NAME}.tmp"));
            // A stale one from an interrupted run would block `create_new`.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing a stale copy of", e))
                }
                _ => {}
            }
            write_new(&tmp, &generated).map_err(|e| io("writing", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io("replacing", e))?;
            return Ok((generated, true));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    let generated = Generated {
        pair: KeyPair::generate(),
        api_key: generate_api_key(),
    };
    write_new(&path, &generated).map_err(|e| io("creating", e))?;
    Ok((generated, true))
}

/// Writes `g` to a new file at `path`, readable by its owner only.
fn write_new(path: &Path, g: &Generated) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(
        file,
        "# Generated by factory serve. SigV4 credentials (boto3):\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n# Bearer API key (Authorization: Bearer; OpenAI clients' OPENAI_API_KEY):\napi_key = \"{}\"",
        g.pair.access_key_id, g.pair.secret_access_key, g.api_key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_stored_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("factory-cred-{}", rand::random::<u64>()));
        let (first, created) = load_or_create(&dir).expect("created");
        assert!(created);
        assert_eq!(first.pair.access_key_id.len(), 20);
        assert_eq!(first.pair.secret_access_key.len(), 40);
        assert!(first.api_key.starts_with("fk-") && first.api_key.len() == 43);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(FILE_NAME))
                .expect("stored")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = load_or_create(&dir).expect("loaded");
        assert!(!created);
        assert_eq!(again, first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_from_before_api_keys_gains_one_and_keeps_its_pair() {
        let dir = std::env::temp_dir().join(format!("factory-cred-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join(FILE_NAME),
            "access_key_id = \"FKIAOLD\"\nsecret_access_key = \"oldsecret\"\n",
        )
        .expect("old file");
        let (g, created) = load_or_create(&dir).expect("upgraded");
        assert!(created);
        assert_eq!(g.pair.access_key_id, "FKIAOLD");
        assert_eq!(g.pair.secret_access_key, "oldsecret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(FILE_NAME))
                .expect("stored")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = load_or_create(&dir).expect("loaded");
        assert!(!created);
        assert_eq!(again, g);
        assert!(!dir.join(format!("{FILE_NAME}.tmp")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_hides_the_secret() {
        let pair = KeyPair::generate();
        assert!(!format!("{pair:?}").contains(&pair.secret_access_key));
    }
}
