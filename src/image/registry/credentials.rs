//! Registry credentials from the files podman, skopeo and docker use.
//!
//! Lookup order for a registry host, first file with an entry wins:
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `${DOCKER_CONFIG:-~/.docker}/config.json`.
//! In each file: `credHelpers[host]`, then `credsStore` (docker's config
//! only), then `auths` (the most specific `host/ns/repo` key wins).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::reference::{DOCKER_HUB, DOCKER_HUB_KEY};

/// Credentials for one registry and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: Secret,
    /// The file (and helper) they were read from, for error messages.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    /// An OAuth2 refresh token (`identitytoken`).
    IdentityToken(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The files to look in, in order, with whether each is docker's config.
pub fn auth_files() -> Vec<(PathBuf, bool)> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from);
    let mut files = Vec::new();
    if let Some(file) = env("REGISTRY_AUTH_FILE") {
        files.push((PathBuf::from(file), false));
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR") {
        files.push((PathBuf::from(dir).join("containers/auth.json"), false));
    }
    if let Some(home) = &home {
        files.push((home.join(".config/containers/auth.json"), false));
    }
    match env("DOCKER_CONFIG") {
        Some(dir) => files.push((PathBuf::from(dir).join("config.json"), true)),
        None => {
            if let Some(home) = &home {
                files.push((home.join(".docker/config.json"), true));
            }
        }
    }
    files
}

/// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub)
/// and `repository`, or None to go anonymous.
pub fn lookup(registry: &str, repository: &str) -> anyhow::Result<Option<Credentials>> {
    for (path, is_docker) in auth_files() {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read `{}`", path.display()));
            }
        };
        let file: AuthFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("`{}` is not a valid auth file", path.display()))?;
        if let Some(found) = from_file(&file, &path, is_docker, None, registry, repository)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn from_file(
    file: &AuthFile,
    path: &Path,
    is_docker: bool,
    helper_dir: Option<&Path>,
    registry: &str,
    repository: &str,
) -> anyhow::Result<Option<Credentials>> {
    let helper = file
        .cred_helpers
        .iter()
        .find(|(key, _)| normalise_key(key) == registry)
        .map(|(_, helper)| helper)
        .or(if is_docker {
            file.creds_store.as_ref()
        } else {
            None
        });
    // A miss in the helper falls through to `auths`.
    if let Some(helper) = helper
        && let Some(found) = run_helper(helper, helper_dir, registry, path)?
    {
        return Ok(Some(found));
    }
    let wanted = format!("{registry}/{repository}");
    let best = file
        .auths
        .iter()
        .filter_map(|(key, entry)| {
            let key = normalise_key(key);
            let matches = key == registry
                || (wanted.starts_with(&key) && wanted.as_bytes().get(key.len()) == Some(&b'/'));
            matches.then_some((key.len(), entry))
        })
        .max_by_key(|(len, _)| *len);
    let Some((_, entry)) = best else {
        return Ok(None);
    };
    let origin = path.display().to_string();
    let decoded = match &entry.auth {
        Some(auth) if !auth.is_empty() => {
            let bytes = base64_decode(auth.trim()).with_context(|| {
                format!("the `auth` for {registry} in `{origin}` is not base64")
            })?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("the `auth` for {registry} in `{origin}` is not UTF-8"))?;
            let Some((user, password)) = text.split_once(':') else {
                bail!("the `auth` for {registry} in `{origin}` is not `user:password`");
            };
            Some((user.to_string(), password.to_string()))
        }
        _ => None,
    };
    Ok(match (&entry.identitytoken, decoded) {
        (Some(token), decoded) if !token.is_empty() => Some(Credentials {
            username: decoded.map(|(u, _)| u).unwrap_or_default(),
            secret: Secret::IdentityToken(token.clone()),
            origin,
        }),
        (_, Some((username, password))) => Some(Credentials {
            username,
            secret: Secret::Password(password),
            origin,
        }),
        _ => None,
    })
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/v2/` → `h:5000`;
/// auth.json's `host/ns/repo` keys are kept as they are.
pub(super) fn normalise_key(key: &str) -> String {
    let key = if key == DOCKER_HUB_KEY {
        return DOCKER_HUB.to_string();
    } else if let Some((_, rest)) = key.split_once("://") {
        rest.split('/').next().unwrap_or(rest)
    } else {
        key.trim_end_matches('/')
    };
    match key {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => {
            if let Some(rest) = other.strip_prefix("index.docker.io/") {
                format!("{DOCKER_HUB}/{rest}")
            } else {
                other.to_string()
            }
        }
    }
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// `docker-credential-<helper> get`, the server on stdin. A non-zero exit
/// (e.g. "credentials not found in native keychain") is a miss.
/// `helper_dir` (tests) runs the helper from there instead of `$PATH`.
fn run_helper(
    helper: &str,
    helper_dir: Option<&Path>,
    registry: &str,
    file: &Path,
) -> anyhow::Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == DOCKER_HUB {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    let origin = format!("{program}, named in {}", file.display());
    let command = match helper_dir {
        Some(dir) => dir.join(&program),
        None => PathBuf::from(&program),
    };
    let (status, stdout) = call_helper(&command, "get", server.as_bytes()).with_context(|| {
        format!(
            "cannot run the credential helper `{program}` that `{}` names for {registry}",
            file.display()
        )
    })?;
    if !status {
        return Ok(None);
    }
    let reply: HelperReply = serde_json::from_slice(&stdout)
        .with_context(|| format!("`{program} get` printed something that is not JSON"))?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if reply.username == "<token>" {
        Credentials {
            username: String::new(),
            secret: Secret::IdentityToken(reply.secret),
            origin,
        }
    } else {
        Credentials {
            username: reply.username,
            secret: Secret::Password(reply.secret),
            origin,
        }
    }))
}

/// Runs `command action` with `input` on stdin (then closed) and returns
/// whether it exited 0 and what it printed (at most 1 MiB). 10 s limit.
pub(super) fn call_helper(
    command: &Path,
    action: &str,
    input: &[u8],
) -> anyhow::Result<(bool, Vec<u8>)> {
    let mut child = Command::new(command)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading closes the pipe: not fatal.
        let _ = stdin.write_all(input);
    }
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        // Reads until the helper exits or closes stdout.
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut stdout);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{} {action}` did not finish within 10 s",
                command.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok((status.success(), stdout))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => bail!("invalid base64"),
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> AuthFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn base64_round_trip() {
        for text in ["", "a", "ab", "abc", "tester:s3cret", "user:pa:ss"] {
            let encoded = base64_encode(text.as_bytes());
            assert_eq!(base64_decode(&encoded).unwrap(), text.as_bytes());
        }
        assert_eq!(base64_encode(b"tester:s3cret"), "dGVzdGVyOnMzY3JldA==");
    }

    #[test]
    fn auths_entries() {
        let file = parse(
            r#"{"auths": {
                "127.0.0.1:5556": {"auth": "dGVzdGVyOnMzY3JldA=="},
                "https://index.docker.io/v1/": {"auth": "aHViOnB3"},
                "quay.io": {"auth": "YTpi"},
                "quay.io/org": {"auth": "b3JnOnB3"},
                "tok.io": {"auth": "dTo=", "identitytoken": "refresh"}
            }}"#,
        );
        let p = Path::new("/f/auth.json");
        let get = |host: &str, repo: &str| from_file(&file, p, false, None, host, repo).unwrap();
        let c = get("127.0.0.1:5556", "multi").unwrap();
        assert_eq!(c.username, "tester");
        assert_eq!(c.secret, Secret::Password("s3cret".into()));
        assert_eq!(c.origin, "/f/auth.json");
        assert_eq!(get("docker.io", "library/x").unwrap().username, "hub");
        assert_eq!(get("quay.io", "org/app").unwrap().username, "org");
        assert_eq!(get("quay.io", "other/app").unwrap().username, "a");
        assert_eq!(get("quay.io", "organisation/app").unwrap().username, "a");
        assert_eq!(
            get("tok.io", "x").unwrap().secret,
            Secret::IdentityToken("refresh".into())
        );
        assert!(get("127.0.0.1:5555", "multi").is_none());
    }

    #[test]
    fn credential_helper_script() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("docker-credential-dentest");
        std::fs::write(
            &script,
            "#!/bin/sh\nread -r server\ncase \"$server\" in\n\
             127.0.0.1:5556) echo '{\"ServerURL\":\"x\",\"Username\":\"tester\",\"Secret\":\"s3cret\"}' ;;\n\
             tok.io) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}' ;;\n\
             *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = Some(dir.path());
        let file = parse(
            r#"{"credHelpers": {"127.0.0.1:5556": "dentest", "tok.io": "dentest",
                "miss.io": "dentest"},
                "auths": {"miss.io": {"auth": "YTpi"}}}"#,
        );
        let p = Path::new("/f/config.json");
        let c = from_file(&file, p, true, d, "127.0.0.1:5556", "multi")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "tester");
        assert_eq!(c.secret, Secret::Password("s3cret".into()));
        assert!(
            c.origin.contains("docker-credential-dentest"),
            "{}",
            c.origin
        );
        let t = from_file(&file, p, true, d, "tok.io", "x")
            .unwrap()
            .unwrap();
        assert_eq!(t.secret, Secret::IdentityToken("refresh".into()));
        // A helper miss falls back to `auths`.
        let m = from_file(&file, p, true, d, "miss.io", "x")
            .unwrap()
            .unwrap();
        assert_eq!(m.username, "a");
        // credsStore applies only to docker's config.
        let store = parse(r#"{"credsStore": "dentest"}"#);
        assert!(
            from_file(&store, p, true, d, "127.0.0.1:5556", "m")
                .unwrap()
                .is_some()
        );
        assert!(
            from_file(&store, p, false, d, "127.0.0.1:5556", "m")
                .unwrap()
                .is_none()
        );
        assert!(
            from_file(&store, p, true, d, "other.io", "m")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn keys_are_normalised() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_key("http://h:5000/v2/"), "h:5000");
        assert_eq!(normalise_key("quay.io/org"), "quay.io/org");
        assert_eq!(normalise_key("index.docker.io"), "docker.io");
    }
}
