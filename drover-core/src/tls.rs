//! Trust on TLS links (`amqps://`, https S3, resource files and the management API, and
//! `rediss://`): the certificate authorities of `--ca-file`, besides the system's (or
//! SSL_CERT_FILE's); for Redis, instead of them (the redis crate takes one set).

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
