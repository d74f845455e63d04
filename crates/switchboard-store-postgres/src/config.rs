//! The database URL, the pool's bounds and timeouts, and TLS.
//!
//! The URL is the one every PostgreSQL tool takes:
//! `postgres://user:password@host:port/database?sslmode=require&connect_timeout=5`, with
//! `options=-csearch_path%3Dswitchboard` to keep the tables in a schema of their own. TLS follows
//! libpq's `sslmode`: `disable` (plain), `prefer` (the default: TLS when the server offers it),
//! `require` (TLS or nothing; the certificate is not checked, as with libpq), and
//! `verify-full` (TLS, the certificate checked against the platform's roots and the host name).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::BuilderVerifierExt;
use switchboard_store::{QuarantineLimits, StoreError};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a [`crate::PgStore`] connects and runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// The most connections the pool opens (at least 2: one append at a time plus readers).
    /// The head listener holds one more connection of its own.
    pub max_connections: usize,
    /// How long opening one connection may take (the URL's `connect_timeout` wins).
    pub connect_timeout: Duration,
    /// How long a caller waits for a free connection of the pool before
    /// [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` on every connection of the pool, and its
    /// `idle_in_transaction_session_timeout` (a replica cut off mid-transaction releases the
    /// state row's lock after it).
    pub statement_timeout: Duration,
    /// The most append requests committed together in one transaction.
    pub max_batch: usize,
    /// How often the head listener reads the head even without a notification (a safety net;
    /// notifications are the fast path).
    pub poll_interval: Duration,
    /// How many of the newest events read from the log the store keeps decoded in memory
    /// for subscribers tailing it (0: none).
    pub tail_cache_events: usize,
    /// About how many bytes of events (payloads and raw bodies) the tail cache holds at most.
    pub tail_cache_bytes: usize,
    /// The quarantine's bounds.
    pub quarantine: QuarantineLimits,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            max_batch: 256,
            poll_interval: Duration::from_secs(1),
            tail_cache_events: 4096,
            tail_cache_bytes: 64 * 1024 * 1024,
            quarantine: QuarantineLimits::default(),
        }
    }
}

/// A parsed URL: the driver's config, the TLS connector for its `sslmode`, and the URL with
/// its password hidden (for logs and errors).
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

fn bad_url(shown: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidArgument(format!(
        "the database URL {shown} is not usable: {reason}; write it as postgres://user:password@host:port/database?sslmode=disable|prefer|require|verify-full"
    ))
}

/// The URL with the password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let query: Vec<String> = tail
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.starts_with("password=") {
                "password=***".to_owned()
            } else {
                p.to_owned()
            }
        })
        .collect();
    let path = tail.split_once('?').map_or(tail, |(p, _)| p);
    if query.is_empty() {
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}?{}", query.join("&"))
    }
}

/// Parses `url` and builds the connector its `sslmode` asks for.
pub(crate) fn target(url: &str, options: &PgOptions) -> Result<Target, StoreError> {
    let shown = redact(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad_url(
            &shown,
            "it must start with postgres:// or postgresql://",
        ));
    }
    // tokio-postgres knows disable, prefer and require; verify-full is ours (require, plus a
    // verifying connector), so it is taken out of the URL before the driver parses it.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut verify = false;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "verify-full")) => verify = true,
            Some(("sslmode", "verify-ca")) => {
                return Err(bad_url(
                    &shown,
                    "sslmode=verify-ca is not supported; use verify-full (the certificate and the host name are checked against the system's roots) or require",
                ));
            }
            Some(("sslmode", "allow")) => {
                return Err(bad_url(
                    &shown,
                    "sslmode=allow is not supported; use prefer",
                ));
            }
            _ => kept.push(pair),
        }
    }
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = driver_url.parse().map_err(|e| bad_url(&shown, e))?;
    if config.get_hosts().is_empty() {
        return Err(bad_url(&shown, "it names no host"));
    }
    if config.get_dbname().is_none() {
        return Err(bad_url(&shown, "it names no database"));
    }
    if verify {
        config.ssl_mode(SslMode::Require);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("switchboard");
    }
    // A session that stops talking inside a transaction (a replica cut off mid-append) would
    // hold the state row's lock: the server ends it after the same time as a statement.
    let timeout = options.statement_timeout.as_millis().max(1);
    let statement =
        format!("-c statement_timeout={timeout} -c idle_in_transaction_session_timeout={timeout}");
    let merged = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {statement}"),
        _ => statement,
    };
    config.options(merged);
    let tls = if verify {
        verifying_tls().map_err(|e| bad_url(&shown, format!("TLS: {e}")))?
    } else {
        encrypting_tls().map_err(|e| bad_url(&shown, format!("TLS: {e}")))?
    };
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
        shown,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// verify-full: the platform's verifier (system roots, host name).
fn verifying_tls() -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth())
}

/// prefer and require: encrypted, the certificate not checked (libpq's meaning of these
/// modes: they protect against eavesdropping, not against a server in the middle). The
/// handshake's signatures are still checked against the certificate presented.
fn encrypting_tls() -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
        .with_no_client_auth())
}

/// A verifier that accepts any certificate (sslmode `prefer` and `require`).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://sb:secret@db:5432/switchboard?sslmode=require"),
            "postgres://sb:***@db:5432/switchboard?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/switchboard?user=sb&password=secret"),
            "postgres://db/switchboard?user=sb&password=***"
        );
        assert_eq!(
            redact("postgres://sb@127.0.0.1/switchboard"),
            "postgres://sb@127.0.0.1/switchboard"
        );
    }

    #[test]
    fn ssl_modes_follow_libpq() {
        let options = PgOptions::default();
        for (mode, expected) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let url = format!("postgres://sb:pw@db.example:5432/switchboard?sslmode={mode}");
            let target = target(&url, &options).unwrap();
            assert_eq!(target.config.get_ssl_mode(), expected, "{mode}");
            assert!(!format!("{target:?}").contains("pw"));
        }
        let target = target("postgres://sb@db/switchboard", &options).unwrap();
        assert_eq!(target.config.get_ssl_mode(), SslMode::Prefer);
        for bad in [
            "postgres://sb@db/switchboard?sslmode=verify-ca",
            "postgres://sb@db/switchboard?sslmode=bogus",
            "mysql://sb@db/switchboard",
            "postgres://sb:pw@db/switchboard?nonsense=1",
        ] {
            let error = super::target(bad, &options).unwrap_err();
            assert!(matches!(error, StoreError::InvalidArgument(_)), "{bad}");
            assert!(!error.to_string().contains(":pw@"), "{error}");
        }
    }

    #[test]
    fn the_statement_timeout_joins_the_url_options() {
        let options = PgOptions {
            statement_timeout: Duration::from_millis(1500),
            ..PgOptions::default()
        };
        let target = target(
            "postgres://sb@db/switchboard?options=-csearch_path%3Dsb&connect_timeout=2",
            &options,
        )
        .unwrap();
        assert_eq!(
            target.config.get_options(),
            Some(
                "-csearch_path=sb -c statement_timeout=1500 -c idle_in_transaction_session_timeout=1500"
            )
        );
        assert_eq!(
            target.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
    }
}
