//! Trust on TLS links (`amqps://`, https S3, resource files and the management API, and
//! `rediss://`): the certificate authorities of `--ca-file`, besides the system's (or
//! SSL_CERT_FILE's); for Redis, instead of them (the redis crate takes one set). And the
//! servers' side: a certificate and key for what drover serves (`/metrics`, the Batch API).

use crate::{Error, Result};
use std::path::Path;

/// The PEM text of the authorities in `path`, refused when it holds no certificate.
pub fn ca_pem(path: &Path) -> Result<String> {
    let shown = path.display();
    let pem = std::fs::read_to_string(path).map_err(|e| Error::io(format!("ca-file {shown}"), e))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::invalid(format!("ca-file {shown}: no PEM certificate in it")));
    }
    Ok(pem)
}

/// `builder` trusting the authorities of `ca_file` too.
pub fn http_client(builder: reqwest::ClientBuilder, ca_file: Option<&Path>) -> Result<reqwest::Client> {
    let builder = match ca_file {
        Some(path) => {
            let certs = reqwest::Certificate::from_pem_bundle(ca_pem(path)?.as_bytes())
                .map_err(|e| Error::invalid(format!("ca-file {}: {e}", path.display())))?;
            builder.tls_certs_merge(certs)
        }
        None => builder,
    };
    builder.build().map_err(|e| Error::Storage(format!("http client: {e}")))
}

pub use tokio_rustls::TlsAcceptor;

/// A TLS acceptor for the PEM certificate chain `cert` and private key `key`; errors name the
/// settings they came from (`flags`: the certificate's, the key's).
pub fn acceptor(cert: &Path, key: &Path, flags: (&str, &str)) -> Result<TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let (cert_flag, key_flag) = flags;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::invalid(format!("{cert_flag} {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::invalid(format!("{cert_flag} {}: no PEM certificate in it", cert.display())));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| Error::invalid(format!("{key_flag} {}: {e}", key.display())))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| Error::invalid(format!("{key_flag} {}: {e}", key.display())))?;
    Ok(TlsAcceptor::from(std::sync::Arc::new(config)))
}
