//! What builds and runs borrow from the host: proxy settings, the CA
//! bundle the host trusts, and package caches in the user's cache dir.
//! None of it is part of a build's cache key.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::userns::{Bind, RUN_DEN};

/// Proxy variables passed into containers, under both spellings: tools
/// disagree on which they read (apt only reads `http_proxy`).
const PROXY_VARS: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "all_proxy",
    "no_proxy",
];

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
/// upper case (the lower-case value wins when both are set and differ).
pub fn proxy_env() -> Vec<(String, String)> {
    let mut env = Vec::new();
    for name in PROXY_VARS {
        let upper = name.to_ascii_uppercase();
        let value = std::env::var(name)
            .ok()
            .or_else(|| std::env::var(&upper).ok());
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            env.push((name.to_string(), value.clone()));
            env.push((upper, value));
        }
    }
    env
}

/// The host's CA bundle: `$SSL_CERT_FILE`, else the first of the
/// distributions' usual places. `None` when the host has none.
fn ca_bundle() -> Option<PathBuf> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
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
pub fn ca_bind_and_env() -> Option<(Bind, Vec<(String, String)>)> {
    let bundle = ca_bundle()?;
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

/// `$DEN_CACHE_DIR`, else `$XDG_CACHE_HOME/den`, else `~/.cache/den`,
/// joined with `kind`; created if missing.
pub fn cache_dir(kind: &str) -> Result<PathBuf> {
    let base = match std::env::var_os("DEN_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => directories::BaseDirs::new()
            .context("cannot find the home directory for den's cache; set DEN_CACHE_DIR")?
            .cache_dir()
            .join("den"),
    };
    let dir = base.join(kind);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the cache directory `{}`", dir.display()))?;
    Ok(dir)
}
