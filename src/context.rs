//! What one den invocation works with, made once in `cli` and passed
//! down: the variables den reads from its environment (every `DEN_*`
//! and proxy variable is read here and nowhere else), where it keeps
//! things (the image store, the cache), den's settings (read the first
//! time something needs them) and whether it speaks to a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, Result};
use directories::BaseDirs;

use crate::config::settings::{self, Settings};
use crate::image::{self, Proxies, Store};

/// The variables den reads from its environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `DEN_DATA_DIR`: the image store.
    pub data_dir: Option<PathBuf>,
    /// `DEN_CACHE_DIR`: downloads and package caches.
    pub cache_dir: Option<PathBuf>,
    /// `DEN_CONFIG`: den's settings file.
    pub config: Option<PathBuf>,
    /// `DEN_INSECURE_REGISTRIES`: registries den may speak plain http to.
    pub insecure_registries: Option<String>,
    /// `http_proxy` and friends, in both cases.
    pub proxies: Proxies,
    /// `SSL_CERT_FILE`: the CA bundle the host trusts, when not the
    /// distribution's.
    pub ssl_cert_file: Option<PathBuf>,
    /// `TERM`: whether a terminal can draw progress bars.
    pub term: Option<String>,
}

impl Env {
    /// den's own environment.
    pub fn read() -> Env {
        Env::read_from(|name| std::env::var_os(name).and_then(|v| v.into_string().ok()))
    }

    /// Through `get`, which looks a variable up (empty counts as unset).
    pub fn read_from(get: impl Fn(&str) -> Option<String>) -> Env {
        let get = |name: &str| get(name).filter(|value| !value.is_empty());
        let path = |name: &str| get(name).map(PathBuf::from);
        Env {
            data_dir: path("DEN_DATA_DIR"),
            cache_dir: path("DEN_CACHE_DIR"),
            config: path("DEN_CONFIG"),
            insecure_registries: get("DEN_INSECURE_REGISTRIES"),
            proxies: Proxies::read(get),
            ssl_cert_file: path("SSL_CERT_FILE"),
            term: get("TERM"),
        }
    }
}

/// One invocation's context.
pub struct Context {
    pub env: Env,
    store: OnceLock<Store>,
    settings: Arc<OnceLock<Settings>>,
    /// stderr is a terminal that can redraw (progress bars, a live tail).
    pub terminal: bool,
}

impl Context {
    pub fn new(env: Env) -> Context {
        let terminal = std::io::stderr().is_terminal()
            && env.term.as_deref().is_some_and(|term| term != "dumb");
        Context {
            env,
            store: OnceLock::new(),
            settings: Arc::new(OnceLock::new()),
            terminal,
        }
    }

    /// The image store: `$DEN_DATA_DIR`, else `~/.local/share/den`.
    pub fn store(&self) -> Result<&Store> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let root = den_dir(&self.env.data_dir, "DEN_DATA_DIR", BaseDirs::data_dir)?;
        let store = Store::open(root, self.store_environment())?;
        Ok(self.store.get_or_init(|| store))
    }

    /// What the store needs of den's surroundings.
    pub fn store_environment(&self) -> image::Environment {
        let settings = Arc::clone(&self.settings);
        let file = self.settings_path();
        image::Environment {
            proxies: self.env.proxies.clone(),
            insecure_registries: self.env.insecure_registries.iter().cloned().collect(),
            settings: Some(Arc::new(move || {
                let settings = load_once(&settings, file.as_deref())?;
                Ok(image::Settings {
                    insecure_registries: settings.insecure_registries.clone(),
                    max_unpacked_size: settings.max_unpacked_size,
                    file: file.clone().unwrap_or_default(),
                })
            })),
            bars: self.terminal,
        }
    }

    /// den's settings file: `$DEN_CONFIG`, else
    /// `$XDG_CONFIG_HOME/den/config.yaml`.
    pub fn settings_path(&self) -> Option<PathBuf> {
        match &self.env.config {
            Some(file) => Some(file.clone()),
            None => settings::default_path(),
        }
    }

    /// The user's cache: `$DEN_CACHE_DIR`, else `~/.cache/den`.
    pub fn cache(&self) -> Result<Cache> {
        let root = den_dir(&self.env.cache_dir, "DEN_CACHE_DIR", BaseDirs::cache_dir)?;
        Ok(Cache { root })
    }
}

/// `set` (from `variable`), else `den` in the user's XDG directory `base`.
fn den_dir(set: &Option<PathBuf>, variable: &str, base: fn(&BaseDirs) -> &Path) -> Result<PathBuf> {
    match set {
        Some(dir) => Ok(dir.clone()),
        None => {
            let dirs = BaseDirs::new()
                .with_context(|| format!("cannot find your home directory; set {variable}"))?;
            Ok(base(&dirs).join("den"))
        }
    }
}

/// Reads the settings file the first time; later calls reuse it.
fn load_once<'s>(cell: &'s OnceLock<Settings>, file: Option<&Path>) -> Result<&'s Settings> {
    if let Some(settings) = cell.get() {
        return Ok(settings);
    }
    let loaded = match file {
        Some(file) => settings::load(file)?,
        None => Settings::default(),
    };
    Ok(cell.get_or_init(|| loaded))
}

/// den's cache directory and its buckets: every path in it comes from
/// here.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<cache>/<bucket>`, created if missing.
    fn bucket(&self, bucket: &str) -> Result<PathBuf> {
        let dir = self.root.join(bucket);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the cache directory `{}`", dir.display()))?;
        Ok(dir)
    }

    /// Verified `download:` files, by sha256.
    pub fn downloads(&self) -> Result<PathBuf> {
        self.bucket("downloads/sha256")
    }

    /// Packages indexes a bootstrap fetched, by sha256.
    pub fn bootstrap_indexes(&self) -> Result<PathBuf> {
        self.bucket("bootstrap/indexes")
    }

    /// .deb files bootstraps fetched, by sha256.
    pub fn bootstrap_debs(&self) -> Result<PathBuf> {
        self.bucket("bootstrap/debs")
    }

    /// A package manager's cache (`apt`, `pip`, `npm`…), per system
    /// where it matters (`apt/debian-12-amd64`).
    pub fn packages(&self, kind: &str) -> Result<PathBuf> {
        self.bucket(kind)
    }
}
