//! den's own settings, per user: `$DEN_CONFIG`, else
//! `$XDG_CONFIG_HOME/den/config.yaml` (`~/.config/den/config.yaml`);
//! `crate::context` decides which file and when to read it.
//! Read only when a registry is contacted or layers are unpacked, never
//! on the way to a run of an image already in the store.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::error::{Issue, Pos, with_hint};
use super::yaml::{self, Node, Value};

const KEYS: [&str; 2] = ["insecure-registries", "max-unpacked-size"];

/// What the user configured; empty when there is no file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `host[:port]` entries den may speak plain http to.
    pub insecure_registries: Vec<String>,
    /// The most bytes the layers of one image may unpack to; no limit
    /// when unset.
    pub max_unpacked_size: Option<u64>,
}

/// The settings file when `$DEN_CONFIG` does not name one (the context
/// reads that): `$XDG_CONFIG_HOME/den/config.yaml`.
pub fn default_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|dirs| dirs.config_dir().join("den").join("config.yaml"))
}

/// Reads the settings in `file`; a missing file means the defaults.
pub fn load(file: &Path) -> Result<Settings, ConfigError> {
    let bytes = match fs::read(file) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(err) => {
            return Err(ConfigError::Io {
                path: file.to_path_buf(),
                err,
            });
        }
    };
    let text = yaml::utf8(&bytes).map_err(|issue| issue.into_error(file))?;
    parse(text, file)
}

/// Checks the settings file's `text` (`file` names it in messages).
pub fn parse(text: &str, file: &Path) -> Result<Settings, ConfigError> {
    let root = yaml::parse(text).map_err(|issue| issue.into_error(file))?;
    settings(root.as_ref()).map_err(|issue| issue.into_error(file))
}

fn settings(root: Option<&Node>) -> Result<Settings, Issue> {
    let mut settings = Settings::default();
    let entries = match root.map(|node| &node.value) {
        None | Some(Value::Null) => return Ok(settings),
        Some(Value::Map(entries)) => entries,
        Some(other) => {
            let at = root.map_or(Pos::START, |node| node.referenced.into());
            return Err(Issue::new(
                at,
                format!("the settings file is {}", other.kind()),
                "a map",
            ));
        }
    };
    for (key, value) in entries {
        match &key.value {
            Value::Str(name) if name == "insecure-registries" => {
                settings.insecure_registries = registries(value)?;
            }
            Value::Str(name) if name == "max-unpacked-size" => {
                settings.max_unpacked_size = Some(size(value)?);
            }
            other => {
                let name = match other {
                    Value::Str(name) => name.clone(),
                    _ => format!("{other:?}"),
                };
                let hint = super::suggest(&name, KEYS);
                let what = with_hint(format!("unknown setting `{name}`"), hint);
                let expected = "`insecure-registries` or `max-unpacked-size`";
                return Err(Issue::new(key.referenced, what, expected));
            }
        }
    }
    Ok(settings)
}

fn registries(value: &Node) -> Result<Vec<String>, Issue> {
    const EXPECTED: &str = "a list of registries as `host` or `host:port`";
    let Value::Seq(items) = &value.value else {
        let what = format!("`insecure-registries` is {}", value.value.kind());
        return Err(Issue::new(value.referenced, what, EXPECTED));
    };
    items
        .iter()
        .map(|item| match &item.value {
            Value::Str(entry) if !entry.is_empty() && !entry.contains(['/', ' ']) => {
                Ok(entry.clone())
            }
            other => {
                let what = format!("an insecure registry entry is {}", describe(other));
                Err(Issue::new(item.referenced, what, EXPECTED))
            }
        })
        .collect()
}

/// A byte count, or a number with a binary unit: `512M`, `1.5G`, `10G`.
fn size(value: &Node) -> Result<u64, Issue> {
    const EXPECTED: &str = "a size above zero such as `10G`, `512M` or `1.5G` (K, M, G, T \
                            are powers of 1024), or a number of bytes";
    let bytes = match &value.value {
        Value::Int(count) => u64::try_from(*count).ok(),
        Value::Str(text) => super::parse_bytes(text),
        _ => None,
    };
    match bytes {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => {
            let shown = match &value.value {
                Value::Int(count) => format!("`{count}`"),
                other => describe(other),
            };
            let what = format!("`max-unpacked-size` is {shown}");
            Err(Issue::new(value.referenced, what, EXPECTED))
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Str(text) => format!("`{text}`"),
        other => other.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_insecure_registries() {
        let settings = parse(
            "insecure-registries: [reg.lan:5000, cache.lan]\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(settings.insecure_registries, ["reg.lan:5000", "cache.lan"]);
        assert_eq!(parse("", Path::new("c.yaml")).unwrap(), Settings::default());
    }

    #[test]
    fn reads_max_unpacked_size() {
        let max = |text: &str| {
            let yaml = format!("max-unpacked-size: {text}\n");
            parse(&yaml, Path::new("c.yaml")).map(|s| s.max_unpacked_size)
        };
        assert_eq!(max("10G").unwrap(), Some(10 << 30));
        assert_eq!(max("512M").unwrap(), Some(512 << 20));
        assert_eq!(max("1.5G").unwrap(), Some(3 << 29));
        assert_eq!(max("64k").unwrap(), Some(64 << 10));
        assert_eq!(max("2T").unwrap(), Some(2 << 40));
        assert_eq!(max("1048576").unwrap(), Some(1 << 20));
        assert_eq!(max("\"4096\"").unwrap(), Some(4096));
        assert_eq!(
            parse("", Path::new("c.yaml")).unwrap().max_unpacked_size,
            None
        );
        for bad in [
            "10X",
            "G",
            "-1G",
            "1e3G",
            "0",
            "0G",
            "1.5",
            "ten",
            "[1G]",
            "99999999999T",
        ] {
            let err = max(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("c.yaml:1:20: `max-unpacked-size` is "),
                "{bad}: {err}"
            );
            assert!(
                err.contains("expected a size above zero such as `10G`"),
                "{err}"
            );
        }
    }

    #[test]
    fn errors_name_the_place_and_what_was_expected() {
        let err = parse("insecure-registry: [a]\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.yaml:1:1: unknown setting `insecure-registry`"),
            "{err}"
        );
        assert!(err.contains("did you mean `insecure-registries`"), "{err}");
        let err = parse("insecure-registries:\n  - http://x\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.yaml:2:5: an insecure registry entry is `http://x`"),
            "{err}"
        );
    }
}
