//! What builds and runs borrow from the host: proxy settings and the CA
//! bundle the host trusts. None of it is part of a build's cache key.

use std::path::{Path, PathBuf};

use crate::image::Proxies;
use crate::userns::{Bind, RUN_DEN};

/// Where the host's CA bundle is bound, inside the container.
pub const CA_FILE: &str = "ca-certificates.crt";

/// Variables naming a CA bundle for the tools that read one: OpenSSL
/// and Python's ssl, requests, pip, node/npm, curl, git and cargo.
const CA_VARS: [&str; 7] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
];

/// The proxy variables den was started with, each set in lower and
/// upper case (the lower-case value wins when both are set and differ):
/// tools disagree on which they read (apt only reads `http_proxy`).
pub fn proxy_env(proxies: &Proxies) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for name in Proxies::NAMES {
        let upper = name.to_ascii_uppercase();
        if let Some(value) = proxies.get(name).or_else(|| proxies.get(&upper)) {
            env.push((name.to_string(), value.clone()));
            env.push((upper, value));
        }
    }
    env
}

/// The host's CA bundle: `$SSL_CERT_FILE`, else the first of the
/// distributions' usual places. `None` when the host has none.
fn ca_bundle(ssl_cert_file: Option<&Path>) -> Option<PathBuf> {
    let candidates = ssl_cert_file.map(Path::to_path_buf).into_iter().chain(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ]
        .map(PathBuf::from),
    );
    candidates
        .into_iter()
        .find(|path| std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() > 0))
}

/// The bundle, bound read-only into /run/den (a bind costs less than
/// reading and writing its 200-odd KB on every run), and the variables
/// pointing at it.
pub fn ca_bind_and_env(ssl_cert_file: Option<&Path>) -> Option<(Bind, Vec<(String, String)>)> {
    let bundle = ca_bundle(ssl_cert_file)?;
    let path = format!("{RUN_DEN}/{CA_FILE}");
    let env = CA_VARS
        .iter()
        .map(|name| (name.to_string(), path.clone()))
        .collect();
    let bind = Bind {
        source: bundle,
        target: path,
        read_only: true,
    };
    Some((bind, env))
}
