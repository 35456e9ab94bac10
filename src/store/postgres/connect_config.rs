//! `store.url` for PostgreSQL, parsed once at start-up: everything
//! tokio-postgres understands, plus libpq's TLS parameters it does not
//! (`sslmode=verify-ca|verify-full`, `sslrootcert`), which are taken out of
//! the URL here and applied by [`super::tls`].
//!
//! Both libpq forms are accepted: `postgres://user:pass@host:5432/db?sslmode=…`
//! and `host=… dbname=… sslmode=…`. Errors name the offending parameter and
//! never echo the URL, which may hold a password.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::{Host, SslMode as WireSslMode};

/// libpq's `sslmode`, with its default `prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is
    /// not checked (as libpq).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is not checked (as libpq, unless
    /// `sslrootcert` is given: then it is checked as with `VerifyCa`).
    Require,
    /// TLS, with a certificate signed by a trusted root; any host name.
    VerifyCa,
    /// TLS, with a trusted certificate issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, UrlError> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            // `allow` (plain first, TLS if refused) has no use against a
            // server that may offer TLS; refusing it beats silently upgrading.
            other => Err(UrlError::SslMode(other.to_string())),
        }
    }
}

/// The certificates a `verify-*` connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// The operating system's roots (`sslrootcert=system`, or none given).
    System,
    /// The PEM file named by `sslrootcert`.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "store.url: sslmode={0:?} is not supported; use disable, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    #[error("store.url: {0} is given twice")]
    Repeated(&'static str),
    #[error("store.url: a value in key=value form is missing its closing quote")]
    UnclosedQuote,
    #[error("store.url is not a valid PostgreSQL URL: {0}")]
    Invalid(String),
}

/// Where and how to connect: the server's settings, its TLS requirements,
/// and a label naming the server (hosts and ports, never credentials).
/// Comparable, so that a typed configuration can hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    pub(super) pg: tokio_postgres::Config,
    pub(super) ssl_mode: SslMode,
    pub(super) root_certificates: RootCertificates,
    pub(super) server: String,
}

impl std::fmt::Debug for ConnectConfig {
    // tokio_postgres::Config's Debug redacts the password, but the user and
    // database names need not be in logs either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("server", &self.server)
            .field("ssl_mode", &self.ssl_mode)
            .field("root_certificates", &self.root_certificates)
            .finish_non_exhaustive()
    }
}

impl ConnectConfig {
    /// The server(s) named by the URL, as `host:port`, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    pub fn root_certificates(&self) -> &RootCertificates {
        &self.root_certificates
    }
}

/// Parses `store.url` for PostgreSQL (see the module documentation).
pub fn parse(url: &str) -> Result<ConnectConfig, UrlError> {
    let (rest, tls) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)?
    } else {
        split_key_value(url)?
    };
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|error| UrlError::Invalid(super::errors::describe(&error)))?;
    let ssl_mode = match tls.ssl_mode {
        Some(value) => SslMode::parse(&value)?,
        None => SslMode::default(),
    };
    let root_certificates = match tls.root_certificates.as_deref() {
        None | Some("system") => RootCertificates::System,
        Some(path) => RootCertificates::File(PathBuf::from(path)),
    };
    // As libpq: with a root certificate file, `require` checks the chain.
    let ssl_mode = match (ssl_mode, &root_certificates) {
        (SslMode::Require, RootCertificates::File(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    pg.ssl_mode(match ssl_mode {
        SslMode::Disable => WireSslMode::Disable,
        SslMode::Prefer => WireSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireSslMode::Require,
    });
    let server = server_label(&pg);
    Ok(ConnectConfig {
        pg,
        ssl_mode,
        root_certificates,
        server,
    })
}

/// The TLS parameters taken out of the URL, still as text.
#[derive(Default)]
struct TlsParameters {
    ssl_mode: Option<String>,
    root_certificates: Option<String>,
}

impl TlsParameters {
    /// Takes `key`'s value when it is one of ours; `false` when it is not.
    fn take(&mut self, key: &str, value: String) -> Result<bool, UrlError> {
        let (slot, name) = match key {
            "sslmode" => (&mut self.ssl_mode, "sslmode"),
            "sslrootcert" => (&mut self.root_certificates, "sslrootcert"),
            _ => return Ok(false),
        };
        if slot.replace(value).is_some() {
            return Err(UrlError::Repeated(name));
        }
        Ok(true)
    }
}

/// `postgres://…?a=b&sslmode=…`: the URL without our parameters, and them.
fn split_url(url: &str) -> Result<(String, TlsParameters), UrlError> {
    let mut tls = TlsParameters::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), tls));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
        if !tls.take(&percent_decode_str(key).decode_utf8_lossy(), value)? {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

/// `host=… sslmode=…`: the string without our parameters, and them.
/// Values may be single-quoted, with `\'` and `\\` escapes (as libpq).
fn split_key_value(text: &str) -> Result<(String, TlsParameters), UrlError> {
    let mut tls = TlsParameters::default();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Not key=value: left to tokio-postgres, which says what is wrong.
            return Ok((text.to_string(), tls));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(UrlError::UnclosedQuote),
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(UrlError::UnclosedQuote),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |&(end, _)| end);
        if !tls.take(&key, value)? {
            kept.push(&text[start..end]);
        }
    }
    let rest = kept
        .iter()
        .map(|pair| pair.trim())
        .collect::<Vec<_>>()
        .join(" ");
    Ok((rest, tls))
}

/// `host:port` of every host the URL names, comma-separated.
fn server_label(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let port_of = |index: usize| {
        ports
            .get(index)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432)
    };
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port_of(index)),
            Host::Tcp(name) => format!("{name}:{}", port_of(index)),
            Host::Unix(path) => format!("{}", path.display()),
        })
        .collect();
    if hosts.is_empty() {
        // tokio-postgres refuses to connect without a host; say so plainly.
        "(no host)".to_string()
    } else {
        hosts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> ConnectConfig {
        parse(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    #[test]
    fn prefer_is_the_default_as_in_libpq() {
        let config = parsed("postgres://u:secret@db.example:6432/bridge");
        assert_eq!(config.ssl_mode(), SslMode::Prefer);
        assert_eq!(config.pg.get_ssl_mode(), WireSslMode::Prefer);
        assert_eq!(config.root_certificates(), &RootCertificates::System);
        assert_eq!(config.server(), "db.example:6432");
    }

    #[test]
    fn every_libpq_mode_is_understood() {
        for (value, mode, wire) in [
            ("disable", SslMode::Disable, WireSslMode::Disable),
            ("prefer", SslMode::Prefer, WireSslMode::Prefer),
            ("require", SslMode::Require, WireSslMode::Require),
            ("verify-ca", SslMode::VerifyCa, WireSslMode::Require),
            ("verify-full", SslMode::VerifyFull, WireSslMode::Require),
        ] {
            let config = parsed(&format!("postgres://u@h/db?sslmode={value}"));
            assert_eq!((config.ssl_mode(), config.pg.get_ssl_mode()), (mode, wire));
        }
    }

    #[test]
    fn the_root_certificate_file_is_taken_out_and_other_options_stay() {
        let config = parsed(
            "postgresql://u:p@h:5433/db?application_name=bridge&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fssl%2Frds-ca.pem&options=-csearch_path%3Dx",
        );
        assert_eq!(config.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(
            config.root_certificates(),
            &RootCertificates::File(PathBuf::from("/etc/ssl/rds-ca.pem"))
        );
        assert_eq!(config.pg.get_application_name(), Some("bridge"));
        assert_eq!(config.pg.get_options(), Some("-csearch_path=x"));
        assert_eq!(
            parsed("postgres://u@h/db?sslmode=verify-ca&sslrootcert=system").root_certificates(),
            &RootCertificates::System
        );
    }

    #[test]
    fn require_with_a_root_file_checks_the_chain_as_libpq() {
        let config = parsed("postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem");
        assert_eq!(config.ssl_mode(), SslMode::VerifyCa);
    }

    #[test]
    fn key_value_form_is_understood() {
        let config = parsed(
            "host=db.example port=5433 user=u password='a b\\'c' sslmode = verify-full \
             sslrootcert='/etc/my ca.pem' dbname=bridge",
        );
        assert_eq!(config.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(
            config.root_certificates(),
            &RootCertificates::File(PathBuf::from("/etc/my ca.pem"))
        );
        assert_eq!(config.pg.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(config.pg.get_dbname(), Some("bridge"));
        assert_eq!(config.server(), "db.example:5433");
    }

    #[test]
    fn mistakes_are_named_without_echoing_the_url() {
        let unknown = parse("postgres://u:hunter2@h/db?sslmode=allow").expect_err("allow");
        assert_eq!(
            unknown.to_string(),
            "store.url: sslmode=\"allow\" is not supported; \
             use disable, prefer, require, verify-ca or verify-full"
        );
        let twice =
            parse("postgres://u:hunter2@h/db?sslmode=require&sslmode=disable").expect_err("twice");
        assert_eq!(twice.to_string(), "store.url: sslmode is given twice");
        let invalid = parse("postgres://u:hunter2@h/db?nonsense=1").expect_err("unknown option");
        assert_eq!(
            invalid.to_string(),
            "store.url is not a valid PostgreSQL URL: \
             invalid connection string: unknown option `nonsense`"
        );
        assert_eq!(
            parse("host=h password='hunter2").expect_err("quote"),
            UrlError::UnclosedQuote
        );
    }

    #[test]
    fn every_host_is_named_with_its_port() {
        assert_eq!(
            parsed("postgres://u@primary:5432,standby:5433/db").server(),
            "primary:5432,standby:5433"
        );
        assert_eq!(parsed("postgres://u@h/db").server(), "h:5432");
    }
}
