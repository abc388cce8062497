//! What the store takes from den's context (`crate::context` makes it
//! once): how to reach registries and download servers, den's settings
//! (read only when a registry is contacted or a layer unpacked, so a run
//! of an imported image reads none), and whether progress may draw bars.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The store's view of den's surroundings.
#[derive(Clone, Default)]
pub struct Environment {
    pub proxies: Proxies,
    /// Registries den may speak plain http to, from the environment
    /// (`$DEN_INSECURE_REGISTRIES`); the settings file adds its own.
    pub insecure_registries: Vec<String>,
    /// Reads den's settings file; `None`: there is none to read.
    pub settings: Option<SettingsLoader>,
    /// Progress may draw bars: stderr is a terminal that moves its cursor.
    pub bars: bool,
}

/// Reads den's settings (`crate::config::settings`).
pub type SettingsLoader = Arc<dyn Fn() -> anyhow::Result<Settings> + Send + Sync>;

/// The settings the store uses.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub insecure_registries: Vec<String>,
    /// What the layers of one import may unpack to, in bytes.
    pub max_unpacked_size: Option<u64>,
    /// The settings file, for messages.
    pub file: PathBuf,
}

impl Environment {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        match &self.settings {
            Some(load) => load(),
            None => Ok(Settings::default()),
        }
    }

    /// The registries den may speak plain http to, comma-separated: the
    /// environment's and the settings file's.
    pub fn insecure_registries(&self) -> anyhow::Result<String> {
        let mut list = self.insecure_registries.clone();
        list.extend(self.settings()?.insecure_registries);
        Ok(list.join(","))
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("proxies", &self.proxies)
            .field("insecure_registries", &self.insecure_registries)
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

/// The proxy variables den was started with, under the names they were
/// set with (`http_proxy`, `HTTPS_PROXY`, …).
#[derive(Debug, Clone, Default)]
pub struct Proxies(BTreeMap<String, String>);

impl Proxies {
    /// The variables, lowercase; each is also read in uppercase.
    pub const NAMES: [&str; 5] = [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "all_proxy",
        "no_proxy",
    ];

    /// Reads every spelling of `NAMES` through `get` (empty values count
    /// as unset).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Proxies {
        let names = Self::NAMES
            .iter()
            .flat_map(|name| [name.to_string(), name.to_ascii_uppercase()]);
        Proxies(
            names
                .filter_map(|name| get(&name).filter(|v| !v.is_empty()).map(|v| (name, v)))
                .collect(),
        )
    }

    /// A variable by its exact name.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}
