//! `bootstrap: debian/<suite> | ubuntu/<suite>`: a base image made
//! straight from the distribution's package archive, verified from the
//! archive key down to every .deb (docs/design/bootstrap.md).
//!
//! The package set and the InRelease it came from go to den.lock; the
//! layer's key is made of the distribution, suite, architecture and the
//! locked versions, so with den.lock and the layer present a run needs
//! no network and costs a file read. Without the layer (another machine,
//! after `den gc`) the locked versions are installed again, or den says
//! which of them the mirror no longer has.

mod archive;
mod deb;
pub mod deb822;
mod install;
pub mod pgp;
pub mod release;
pub mod resolve;
pub mod version;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use self::archive::Archive;
use super::record::{self, Head, Record};
use crate::base::{BootstrapEntry, Pins};
use crate::config::{Bootstrap, Distro, Project, Variant};
use crate::context::Context;
use crate::image::digest::Digest;
use crate::image::lock::lock_exclusive_or_wait;
use crate::image::{Image, RuntimeConfig, Store};

/// Part of every layer key: a new den that makes systems differently
/// must not reuse old layers.
const KEY_VERSION: &str = "den-bootstrap/1";

/// What to make, with den.yaml's defaults filled in.
pub struct Target {
    pub distro: Distro,
    pub suite: String,
    pub mirror: String,
    pub components: Vec<String>,
    pub variant: Variant,
    /// Debian's name for the host's architecture.
    pub arch: String,
    keyring: Option<PathBuf>,
}

impl Target {
    pub fn new(bootstrap: &Bootstrap) -> Result<Target> {
        let arch = debian_arch()?;
        let mirror = match &bootstrap.mirror {
            Some(mirror) => mirror.clone(),
            None => default_mirror(bootstrap.distro, arch).to_string(),
        };
        Ok(Target {
            distro: bootstrap.distro,
            suite: bootstrap.suite.clone(),
            mirror,
            components: bootstrap.components.clone(),
            variant: bootstrap.variant,
            arch: arch.to_string(),
            keyring: bootstrap.keyring.clone(),
        })
    }

    fn name(&self) -> String {
        format!("{}/{}", self.distro.name(), self.suite)
    }

    /// The keys InRelease must be signed with.
    fn keyring(&self) -> Result<pgp::Keyring> {
        let bytes = match &self.keyring {
            Some(path) => std::fs::read(path)
                .with_context(|| format!("cannot read the keyring `{}`", path.display()))?,
            None => match self.distro {
                Distro::Debian => pgp::DEBIAN_KEYS.to_vec(),
                Distro::Ubuntu => pgp::UBUNTU_KEYS.to_vec(),
            },
        };
        pgp::Keyring::parse(&bytes).context("cannot read the archive keys")
    }

    fn custom_keyring(&self) -> bool {
        self.keyring.is_some()
    }

    /// Whether `entry` was locked for this very target.
    fn locked_by(&self, entry: &BootstrapEntry) -> bool {
        entry.bootstrap == self.name()
            && entry.mirror == self.mirror
            && entry.components == self.components
            && entry.variant == self.variant.name()
            && entry.arch == self.arch
    }

    /// The layer's key: what is installed, not where it came from.
    fn key(&self, versions: &BTreeMap<String, String>) -> Digest {
        let mut text = format!(
            "{KEY_VERSION}\n{}\n{}\n{}\n",
            self.name(),
            self.arch,
            self.variant.name()
        );
        for (name, version) in versions {
            text.push_str(&format!("{name}={version}\n"));
        }
        Digest::of(text.as_bytes())
    }
}

/// The image of container `name`: from the store when den.lock's
/// packages were installed before, else made (and den.lock updated).
pub fn image(ctx: &Context, project: &Project, name: &str, bootstrap: &Bootstrap) -> Result<Image> {
    let store = ctx.store()?;
    let target = Target::new(bootstrap)?;
    let mut pins = Pins::load(project)?;
    let pinned = pins
        .bootstrap(name)
        .filter(|entry| target.locked_by(entry))
        .cloned();
    let key = match &pinned {
        Some(entry) => target.key(&entry.packages),
        None => {
            let entry = make(ctx, &target, None, name)?;
            let key = target.key(&entry.packages);
            pins.pin_bootstrap(name, entry);
            pins.save_or_warn();
            key
        }
    };
    let image = match record::load(store, &key) {
        Some(record) => image_of(store, &key, &record),
        None => {
            make(ctx, &target, pinned.as_ref(), name)?;
            let record = record::load(store, &key).context("the bootstrap left no record")?;
            image_of(store, &key, &record)
        }
    };
    keep_alive(store, project, name, &key)?;
    Ok(image)
}

/// `den update`: resolves the suite afresh, makes the system if new and
/// returns the lock entries before and after.
pub fn update(
    ctx: &Context,
    project: &Project,
    name: &str,
    bootstrap: &Bootstrap,
    pins: &mut Pins,
) -> Result<(Option<BootstrapEntry>, BootstrapEntry)> {
    let target = Target::new(bootstrap)?;
    let old = pins.bootstrap(name).cloned();
    let entry = make(ctx, &target, None, name)?;
    keep_alive(ctx.store()?, project, name, &target.key(&entry.packages))?;
    pins.pin_bootstrap(name, entry.clone());
    Ok((old, entry))
}

/// Verifies the archive, picks the packages (den.lock's when `pinned`),
/// and installs them into a layer unless one with their key exists.
fn make(
    ctx: &Context,
    target: &Target,
    pinned: Option<&BootstrapEntry>,
    container: &str,
) -> Result<BootstrapEntry> {
    let store = ctx.store()?;
    let label = format!("{container}: bootstrap {}", target.name());
    let archive = Archive::open(target, ctx)?;
    eprintln!(
        "den: {label}: {} signed {}",
        archive.release.origin, archive.release.date
    );
    let index = archive.index()?;
    let packages = match pinned {
        Some(entry) => {
            if entry.inrelease != archive.inrelease {
                eprintln!(
                    "den: {label}: the mirror moved on since den.lock was written ({}); \
                     installing the locked versions",
                    entry.date
                );
            }
            resolve::pinned(&index, &entry.packages).map_err(|err| gone(err, target, entry))?
        }
        None => resolve::resolve(&index, resolve_variant(target.variant))?,
    };
    let entry = BootstrapEntry {
        bootstrap: target.name(),
        mirror: target.mirror.clone(),
        components: target.components.clone(),
        variant: target.variant.name().to_string(),
        arch: target.arch.clone(),
        inrelease: pinned.map_or(archive.inrelease.clone(), |entry| entry.inrelease.clone()),
        date: pinned.map_or(archive.release.date.clone(), |entry| entry.date.clone()),
        packages: packages
            .iter()
            .map(|package| (package.name.clone(), package.version.clone()))
            .collect(),
    };
    let key = target.key(&entry.packages);
    if record::load(store, &key).is_some() {
        return Ok(entry);
    }
    store.prepare()?;
    let _shared = store.lock_shared()?;
    let lock_path = store.lock_path(&format!("build-{}", key.hex()));
    let (_lock, waited) = lock_exclusive_or_wait(&lock_path, || {
        eprintln!("den: {label}: waiting for another den making the same system");
    })?;
    if waited && record::load(store, &key).is_some() {
        return Ok(entry);
    }
    let debs = archive.fetch(&packages, &label)?;
    let layer = install::make_layer(ctx, target, &packages, &debs, &label)?;
    let layer_name = key.hex().to_string();
    layer.persist(&store.paths().layer(&layer_name))?;
    let record = Record {
        parent: String::new(),
        step: format!("bootstrap {}", target.name()),
        layers: vec![layer_name],
        env: vec![format!("PATH={}", install::PATH)],
        created: record::now(),
    };
    record::write_json(store, &store.paths().build_record(key.hex()), &record)?;
    Ok(entry)
}

/// den.lock's packages are not all in the mirror any more.
fn gone(err: anyhow::Error, target: &Target, entry: &BootstrapEntry) -> anyhow::Error {
    let snapshot = match target.distro {
        Distro::Debian => "http://snapshot.debian.org/archive/debian/<YYYYMMDD>T000000Z",
        Distro::Ubuntu => "https://snapshot.ubuntu.com/ubuntu/<YYYYMMDD>T000000Z",
    };
    err.context(format!(
        "den.lock pins {} as of {}, and {} no longer has all of it; point `mirror` at a \
         snapshot of that date (such as {snapshot}), or run `den update` to take today's \
         packages",
        target.name(),
        entry.date,
        target.mirror
    ))
}

fn resolve_variant(variant: Variant) -> resolve::Variant {
    match variant {
        Variant::Minbase => resolve::Variant::Minbase,
        Variant::Buildd => resolve::Variant::Buildd,
    }
}

fn image_of(store: &Store, key: &Digest, record: &Record) -> Image {
    Image {
        id: format!("bootstrap:{}", key.hex()),
        layers: record
            .layers
            .iter()
            .map(|name| store.paths().layer_fs(name))
            .collect(),
        config: RuntimeConfig {
            env: record.env.clone(),
            cmd: vec!["bash".to_string()],
            ..RuntimeConfig::default()
        },
    }
}

/// A head for (project, container), so `den gc` keeps the layer while the
/// project exists. Containers with setup steps write their own head,
/// whose records list this layer too.
fn keep_alive(store: &Store, project: &Project, name: &str, key: &Digest) -> Result<()> {
    let container = &project.config.containers[name];
    if !container.setup.is_empty() {
        return Ok(());
    }
    let path = store.paths().head(&project.root, name);
    let head = Head {
        steps: String::new(),
        base: String::new(),
        key: key.hex().to_string(),
        watched: Vec::new(),
        project: project.root.clone(),
    };
    match record::read_json::<Head>(&path) {
        Some(old) if old.key == head.key => Ok(()),
        _ => record::write_json(store, &path, &head),
    }
}

/// Debian's name for the architecture den was built for.
fn debian_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86" => "i386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        other => anyhow::bail!("den does not know Debian's name for architecture `{other}`"),
    })
}

fn default_mirror(distro: Distro, arch: &str) -> &'static str {
    match (distro, arch) {
        (Distro::Debian, _) => "http://deb.debian.org/debian",
        (Distro::Ubuntu, "amd64" | "i386") => "http://archive.ubuntu.com/ubuntu",
        (Distro::Ubuntu, _) => "http://ports.ubuntu.com/ubuntu-ports",
    }
}
