//! `den login` / `den logout`: checking credentials against a registry and
//! saving or removing them where den, podman and docker look.
//!
//! Saving: a credential helper's `store` when docker's config names one
//! for the host (`credHelpers`) or for all hosts (`credsStore`); else
//! `auths[host].auth` in `$REGISTRY_AUTH_FILE`, else in
//! `$XDG_RUNTIME_DIR/containers/auth.json`, else in docker's
//! `${DOCKER_CONFIG:-~/.docker}/config.json` (where Docker Hub is
//! `https://index.docker.io/v1/`). Files are replaced atomically, mode
//! 0600, keeping every other key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use super::client::Client;
use super::credentials::{self, Credentials, Secret, auth_files, call_helper, normalise_key};
use super::reference::{DOCKER_HUB, DOCKER_HUB_KEY, Reference};
use crate::image::Environment;

/// Where credentials were saved or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A credential helper, `docker-credential-<name>`.
    Helper(String),
    File(PathBuf),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Helper(program) => write!(f, "{program}"),
            Place::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The registry host `den login`/`logout` were given: `host[:port]`, a
/// URL such as `https://index.docker.io/v1/`, or a Docker Hub name
/// (`docker.io`, `index.docker.io`, `registry-1.docker.io` → `docker.io`).
pub fn registry_host(text: &str) -> anyhow::Result<String> {
    let host = normalise_key(text.trim());
    if host.is_empty() {
        bail!("no registry given: write `host[:port]`, e.g. `ghcr.io` or `docker.io`");
    }
    if host.contains('/') {
        bail!("`{text}` names a repository; den logs in to a whole registry: give `host[:port]`");
    }
    if host != DOCKER_HUB {
        let parsed = Reference::parse(&format!("{host}/x"));
        if !parsed.is_ok_and(|r| r.registry == host) {
            bail!(
                "`{text}` is not a registry host: write `host[:port]` (a host has a `.` or a \
                 `:port`, or is `localhost`)"
            );
        }
    }
    Ok(host)
}

/// `GET /v2/` on `registry` with these credentials, through den's usual
/// Basic or Bearer-token flow.
pub fn verify(
    registry: &str,
    username: &str,
    password: &str,
    env: &Environment,
) -> anyhow::Result<()> {
    let client = Client::for_login(
        registry,
        Credentials {
            username: username.to_string(),
            secret: Secret::Password(password.to_string()),
            origin: "den login".to_string(),
        },
        env,
    )?;
    client.check_login()
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `${DOCKER_CONFIG:-~/.docker}/config.json`.
fn docker_config() -> Option<PathBuf> {
    match env_path("DOCKER_CONFIG") {
        Some(dir) => Some(dir.join("config.json")),
        None => env_path("HOME").map(|home| home.join(".docker/config.json")),
    }
}

/// A JSON object from `path`; an empty one if the file does not exist.
fn read_object(path: &Path) -> anyhow::Result<Option<Map<String, Value>>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read `{}`", path.display())),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        _ => bail!(
            "`{}` is not a valid auth file (a JSON object)",
            path.display()
        ),
    }
}

/// The helper `file` names for `registry`: `credHelpers`, then (docker's
/// config only) `credsStore`.
fn helper_for(file: &Map<String, Value>, is_docker: bool, registry: &str) -> Option<String> {
    let named = file
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| normalise_key(key) == registry)
                .and_then(|(_, helper)| helper.as_str())
        });
    let store = || {
        is_docker
            .then(|| file.get("credsStore").and_then(Value::as_str))
            .flatten()
    };
    named
        .or_else(store)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The server string helpers get: Docker Hub's key, or the host.
fn helper_server(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_KEY
    } else {
        registry
    }
}

/// Saves `username`/`password` for `registry` (see the module comment)
/// and says where.
pub fn save(registry: &str, username: &str, password: &str) -> anyhow::Result<Place> {
    let docker = docker_config();
    if let Some(config) = &docker
        && let Some(file) = read_object(config)?
        && let Some(helper) = helper_for(&file, true, registry)
    {
        let program = format!("docker-credential-{helper}");
        let input = serde_json::json!({
            "ServerURL": helper_server(registry),
            "Username": username,
            "Secret": password,
        });
        let (ok, output) = call_helper(Path::new(&program), "store", input.to_string().as_bytes())
            .with_context(|| {
                format!(
                    "cannot run the credential helper `{program}` that `{}` names",
                    config.display()
                )
            })?;
        if !ok {
            bail!(
                "the credential helper `{program}` could not store the credentials: {}",
                String::from_utf8_lossy(&output).trim()
            );
        }
        return Ok(Place::Helper(program));
    }
    let (path, is_docker) = match (env_path("REGISTRY_AUTH_FILE"), env_path("XDG_RUNTIME_DIR")) {
        (Some(file), _) => (file, false),
        (None, Some(dir)) => (dir.join("containers/auth.json"), false),
        (None, None) => match docker {
            Some(config) => (config, true),
            None => {
                bail!("nowhere to save the credentials: neither XDG_RUNTIME_DIR nor HOME is set")
            }
        },
    };
    let path = fs::canonicalize(&path).unwrap_or(path);
    let mut file = read_object(&path)?.unwrap_or_default();
    let auth = credentials::base64_encode(format!("{username}:{password}").as_bytes());
    put_entry(&mut file, registry, is_docker, &auth)
        .with_context(|| format!("cannot update `{}`", path.display()))?;
    write_private(&path, &Value::Object(file))?;
    Ok(Place::File(path))
}

/// Sets `auths[key].auth`, dropping other keys for the same host
/// (`https://host`, `index.docker.io`, …). Docker Hub's key is
/// `https://index.docker.io/v1/` in docker's config, `docker.io` else.
fn put_entry(
    file: &mut Map<String, Value>,
    registry: &str,
    is_docker: bool,
    auth: &str,
) -> anyhow::Result<()> {
    let auths = file
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(auths) = auths.as_object_mut() else {
        bail!("its `auths` is not a JSON object");
    };
    auths.retain(|key, _| normalise_key(key) != registry);
    let key = if is_docker && registry == DOCKER_HUB {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    auths.insert(key.to_string(), serde_json::json!({ "auth": auth }));
    Ok(())
}

/// Files den reads before `saved` that hold other credentials for
/// `registry` (they would win over the new ones).
pub fn shadowing(registry: &str, saved: &Place) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for (path, _) in auth_files() {
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if let Place::File(saved) = saved
            && &canonical == saved
        {
            break;
        }
        let Ok(Some(file)) = read_object(&path) else {
            continue;
        };
        let has = file
            .get("auths")
            .and_then(Value::as_object)
            .is_some_and(|auths| auths.keys().any(|key| normalise_key(key) == registry));
        if has && !found.contains(&path) {
            found.push(path);
        }
    }
    found
}

/// Removes `registry`'s credentials from every file den reads (`auths`
/// entries for the host itself; `host/ns/repo` entries stay) and from the
/// credential helpers they name. Returns where something was removed.
pub fn erase(registry: &str) -> anyhow::Result<Vec<Place>> {
    let mut removed = Vec::new();
    let mut helpers_called = Vec::new();
    for (path, is_docker) in auth_files() {
        let path = fs::canonicalize(&path).unwrap_or(path);
        let Some(mut file) = read_object(&path)? else {
            continue;
        };
        if let Some(helper) = helper_for(&file, is_docker, registry)
            && !helpers_called.contains(&helper)
        {
            helpers_called.push(helper.clone());
            let program = format!("docker-credential-{helper}");
            let (ok, _) = call_helper(
                Path::new(&program),
                "erase",
                helper_server(registry).as_bytes(),
            )
            .with_context(|| {
                format!(
                    "cannot run the credential helper `{program}` that `{}` names",
                    path.display()
                )
            })?;
            // Non-zero: "credentials not found", nothing to remove.
            if ok {
                removed.push(Place::Helper(program));
            }
        }
        let Some(auths) = file.get_mut("auths").and_then(Value::as_object_mut) else {
            continue;
        };
        let before = auths.len();
        auths.retain(|key, _| normalise_key(key) != registry);
        if auths.len() != before {
            write_private(&path, &Value::Object(file))?;
            if !removed.contains(&Place::File(path.clone())) {
                removed.push(Place::File(path));
            }
        }
    }
    Ok(removed)
}

/// Replaces `path` with `value` atomically (a temporary file in the same
/// directory, then rename), mode 0600; missing directories are made 0700.
fn write_private(path: &Path, value: &Value) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.den-{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    let result = (|| -> std::io::Result<()> {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The umask may have taken more than group and other away.
        out.set_permissions(fs::Permissions::from_mode(0o600))?;
        let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        out.write_all(&bytes)?;
        out.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(err).with_context(|| format!("cannot write `{}`", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for (given, host) in [
            ("docker.io", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("ghcr.io", "ghcr.io"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(registry_host(given).unwrap(), host, "{given}");
        }
        for bad in ["", "ghcr.io/org", "myhost", "UPPER.io/x", "a b.io"] {
            assert!(registry_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn helpers_by_host_then_store() {
        let file: Map<String, Value> =
            serde_json::from_str(r#"{"credHelpers": {"a.io": "one"}, "credsStore": "desktop"}"#)
                .unwrap();
        assert_eq!(helper_for(&file, true, "a.io").as_deref(), Some("one"));
        assert_eq!(helper_for(&file, true, "b.io").as_deref(), Some("desktop"));
        assert_eq!(helper_for(&file, false, "b.io"), None);
        assert_eq!(helper_server("docker.io"), DOCKER_HUB_KEY);
    }

    #[test]
    fn entries_replace_the_host_and_keep_the_rest() {
        let mut file: Map<String, Value> = serde_json::from_str(
            r#"{"auths": {"index.docker.io": {"auth": "b2xkOm9sZA=="},
                          "docker.io/org": {"auth": "b3JnOnB3"},
                          "quay.io": {"auth": "YTpi"}},
                "credsStoreX": 1}"#,
        )
        .unwrap();
        put_entry(&mut file, "docker.io", true, "bmV3OnB3").unwrap();
        assert_eq!(
            Value::Object(file.clone()),
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": "bmV3OnB3"},
                "docker.io/org": {"auth": "b3JnOnB3"},
                "quay.io": {"auth": "YTpi"}},
                "credsStoreX": 1})
        );
        put_entry(&mut file, "docker.io", false, "eDp5").unwrap();
        assert_eq!(file["auths"]["docker.io"]["auth"], "eDp5");
        assert!(file["auths"].get(DOCKER_HUB_KEY).is_none());
        let mut empty = Map::new();
        put_entry(&mut empty, "h:1", false, "YTpi").unwrap();
        assert_eq!(
            Value::Object(empty),
            serde_json::json!({"auths": {"h:1": {"auth": "YTpi"}}})
        );
        let mut bad: Map<String, Value> = serde_json::from_str(r#"{"auths": []}"#).unwrap();
        assert!(put_entry(&mut bad, "h:1", false, "YTpi").is_err());
    }

    #[test]
    fn private_writes_replace_and_keep_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/sub/auth.json");
        write_private(&path, &serde_json::json!({"a": 1})).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        write_private(&path, &serde_json::json!({"b": 2})).unwrap();
        let back: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, serde_json::json!({"b": 2}));
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
