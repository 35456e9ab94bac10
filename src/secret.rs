//! Secret values from configuration: resolved once at load time, redacted
//! everywhere they could leak (Debug, Serialize), compared in constant time.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a secret prints as, in `check-config` and in `Debug` output.
pub const REDACTED: &str = "[redacted]";

/// A resolved secret. Configuration writes it as a literal, `env:NAME` or
/// `file:PATH`; by the time a `Secret` exists the reference has been followed.
#[derive(Clone)]
pub struct Secret(SecretString);

/// Why a secret reference could not be followed. Never carries the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "environment variable {0} named by \"env:{0}\" is not set; export it or change the reference"
    )]
    MissingEnv(String),
    #[error(
        "file {path} named by \"file:{path}\" cannot be read ({reason}); create it or change the reference"
    )]
    UnreadableFile { path: String, reason: String },
    #[error("the secret is empty; an empty secret would accept anything, so set a value")]
    Empty,
}

impl Secret {
    /// Follows a configuration reference: `env:NAME`, `file:PATH` or a literal.
    pub fn resolve(reference: &str) -> Result<Self, SecretError> {
        let value = if let Some(name) = reference.strip_prefix("env:") {
            std::env::var(name).map_err(|_| SecretError::MissingEnv(name.to_string()))?
        } else if let Some(path) = reference.strip_prefix("file:") {
            let text = std::fs::read_to_string(path).map_err(|e| SecretError::UnreadableFile {
                path: path.to_string(),
                reason: e.kind().to_string(),
            })?;
            // Files written by editors and `echo` end in a newline that is not part of the secret.
            text.trim_end_matches(['\n', '\r']).to_string()
        } else {
            reference.to_string()
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(SecretString::from(value)))
    }

    /// A secret given directly in code (tests, the demo).
    pub fn literal(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Constant-time equality against untrusted input: the time taken depends
    /// neither on where the first differing byte is nor on the secret's length
    /// (`subtle` answers unequal lengths at once, so fixed-size digests are compared).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret: [u8; 32] = Sha256::digest(self.expose().as_bytes()).into();
        let candidate: [u8; 32] = Sha256::digest(candidate).into();
        secret.ct_eq(&candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(deserializer)?;
        Secret::resolve(&reference).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_env_and_file_references_resolve() {
        assert_eq!(Secret::resolve("plain").unwrap().expose(), "plain");

        // SAFETY: the variable name is unique to this test.
        unsafe { std::env::set_var("SECRET_RS_TEST_VAR", "from-env") };
        assert_eq!(
            Secret::resolve("env:SECRET_RS_TEST_VAR").unwrap().expose(),
            "from-env"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let reference = format!("file:{}", path.display());
        assert_eq!(Secret::resolve(&reference).unwrap().expose(), "from-file");
    }

    #[test]
    fn unresolvable_references_name_the_problem() {
        let err = Secret::resolve("env:SECRET_RS_SURELY_UNSET").unwrap_err();
        assert_eq!(
            err,
            SecretError::MissingEnv("SECRET_RS_SURELY_UNSET".into())
        );
        assert!(err.to_string().contains("SECRET_RS_SURELY_UNSET"));

        let err = Secret::resolve("file:/nonexistent/secret").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"));
        assert_eq!(Secret::resolve("").unwrap_err(), SecretError::Empty);
    }

    #[test]
    fn debug_and_serialize_never_show_the_value() {
        let secret = Secret::literal("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn matches_compares_whole_values() {
        let secret = Secret::literal("token-a");
        assert!(secret.matches(b"token-a"));
        assert!(!secret.matches(b"token-b"));
        assert!(!secret.matches(b"token-a "));
        assert!(!secret.matches(b""));
    }
}
