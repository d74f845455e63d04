//! TLS for vendor APIs: rustls with the ring provider (the one provider every Switchboard crate
//! shares) and the platform verifier (the system's CA certificates).

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

/// The client TLS configuration, built once per process.
///
/// `https` needs the system's CA certificates (on Linux the `ca-certificates` package); when
/// none are found the error says so. Plain-HTTP clients get a configuration that trusts no
/// certificate, so a missing CA store never stops a loopback or test connection.
pub(crate) fn client_config(https: bool) -> Result<ClientConfig, String> {
    static VERIFIED: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    static PLAIN: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    let cell = if https { &VERIFIED } else { &PLAIN };
    cell.get_or_init(|| build(https)).clone()
}

fn build(https: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot configure TLS ({error})"))?;
    if !https {
        return Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth());
    }
    let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|error| {
        format!("cannot load the system's CA certificates ({error}): install ca-certificates")
    })?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_configurations_build_with_the_ring_provider() {
        let plain = client_config(false).expect("plain config builds");
        assert!(plain.alpn_protocols.is_empty());
        // The verified one needs the system's CA store, which this machine has.
        if std::path::Path::new("/etc/ssl/certs").exists() {
            client_config(true).expect("verified config builds");
        }
    }
}
