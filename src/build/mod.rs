//! Builds: a container's `setup:` steps on top of its base image.
//!
//! Each step runs in a container whose overlay upper dir lives on the
//! store's disk; when the step succeeds that dir, cleaned up by
//! `capture`, becomes a layer (`layers/<key hex>/`), keyed by the
//! parent's key, the step and the content of the project files it reads
//! (`key`). Changing step N rebuilds from N: the steps before it find
//! their records and are reused.
//!
//! `den run` calls `image` every time, so the check that nothing changed
//! is cheap: a head file per (project, container) holds the final key,
//! a hash of the steps, the base image's id and stat signatures of the
//! project files the steps read; when all match, no step is looked at.
//!
//! A container's base comes from `base` (an image source or den.lock's
//! pin), from another container's build (`container:`), or from
//! `bootstrap`, which makes a Debian or Ubuntu system.
//!
//! Steps run as container root under the one-id map. Builds install
//! the fake-ownership filter (see `userns::seccomp`), so package
//! managers can chown to ids that don't exist here; the owners they ask
//! for are kept in the layer's metadata.

pub mod bootstrap;
pub mod capture;
pub mod copy;
mod download;
mod gc;
mod host;
mod key;
mod layers;
mod output;
mod recipes;
mod record;
mod step;

use anyhow::{Context as _, Result};

pub use gc::collect_garbage;
pub use host::{ca_bind_and_env, proxy_env};

use self::copy::StatCache;
use self::record::{Head, Record};
use self::step::Parent;
use crate::config::{Base, Container, Project};
use crate::context::Context;
use crate::image::digest::Digest;
use crate::image::lock::lock_exclusive_or_wait;
use crate::image::{Image, Store};

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Rebuild every step of the container, even those already built.
    pub force: bool,
}

/// The image container `name` runs: its base with its setup steps
/// built, building what is missing.
pub fn image(ctx: &Context, project: &Project, name: &str, options: Options) -> Result<Image> {
    let store = ctx.store()?;
    let container = project
        .config
        .containers
        .get(name)
        .with_context(|| format!("den.yaml has no container `{name}`"))?;
    let base = match &container.from {
        Base::Image(source) => crate::base::image(store, project, name, source)?,
        // `--force` is for the named container; its base is reused.
        Base::Container(parent) => image(ctx, project, parent, Options::default())?,
        Base::Bootstrap(bootstrap) => bootstrap::image(ctx, project, name, bootstrap)?,
    };
    if container.setup.is_empty() {
        return Ok(base);
    }
    let steps = key::steps(&container.setup, container.workdir.as_deref());
    let head_path = store.paths().head(&project.root, name);
    if !options.force
        && let Some(image) = unchanged(store, project, &head_path, &steps, &base)
    {
        return Ok(image);
    }
    let builder = Builder {
        ctx,
        store,
        project,
        name,
        container,
        options,
    };
    let (key, record, watched) = builder.build(&base)?;
    let head = Head {
        steps,
        base: base.id.clone(),
        key: key.hex().to_string(),
        watched,
        project: project.root.clone(),
    };
    record::write_json(store, &head_path, &head)?;
    Ok(built_image(store, &base, &key, record))
}

/// The no-op check: the head's build, if den.yaml's steps, the base and
/// every file the steps read are as they were.
fn unchanged(
    store: &Store,
    project: &Project,
    head_path: &std::path::Path,
    steps: &str,
    base: &Image,
) -> Option<Image> {
    let head: Head = record::read_json(head_path)?;
    if head.steps != steps || head.base != base.id {
        return None;
    }
    if !copy::unchanged(&project.root, &head.watched) {
        return None;
    }
    let key = Digest::parse(&format!("sha256:{}", head.key)).ok()?;
    let record = record::load(store, &key)?;
    Some(built_image(store, base, &key, record))
}

fn built_image(store: &Store, base: &Image, key: &Digest, record: Record) -> Image {
    let mut config = base.config.clone();
    config.env = record.env;
    Image {
        id: format!("build:{}", key.hex()),
        layers: record
            .layers
            .iter()
            .map(|name| store.paths().layer_fs(name))
            .collect(),
        config,
    }
}

struct Builder<'a> {
    ctx: &'a Context,
    store: &'a Store,
    project: &'a Project,
    name: &'a str,
    container: &'a Container,
    options: Options,
}

impl Builder<'_> {
    /// Builds the steps not built yet; returns the final key, its record
    /// and what the no-op check must watch.
    fn build(&self, base: &Image) -> Result<(Digest, Record, Vec<copy::Watched>)> {
        let store = self.store;
        store.clean_tmp()?;
        let _shared = store.lock_shared()?;
        let stat_path = store.paths().stat_cache(&self.project.root);
        let mut cache = StatCache::load(&stat_path);
        let mut parent = Parent {
            key: key::base(&base.id, self.container.workdir.as_deref()),
            layers: base
                .layers
                .iter()
                .map(|fs| record::layer_name(fs))
                .collect(),
            env: base.config.env.clone(),
        };
        let mut record = None;
        let mut watched = Vec::new();
        let total = self.container.setup.len();
        for (index, step) in self.container.setup.iter().enumerate() {
            let ctx = step::StepContext {
                ctx: self.ctx,
                store,
                project_root: &self.project.root,
                container: self.name,
                workdir: self.container.workdir.as_deref(),
                host_ca: self.container.host_ca,
                network: self
                    .container
                    .network
                    .runtime(Vec::new(), self.container.host_loopback),
                confinement: self.container.confinement,
                label: format!("step {}/{total}", index + 1),
            };
            let planned = step::plan(&self.project.root, step, &mut cache)?;
            let key = key::step(&parent.key, &step.kind, &planned.inputs);
            watched.extend(planned.watched.iter().cloned());
            let built = match self.reusable(&key) {
                Some(built) => {
                    step::announce_cached(&ctx, step);
                    built
                }
                None => self.build_step(&ctx, planned, &parent, &key)?,
            };
            parent = Parent {
                key,
                layers: built.layers.clone(),
                env: built.env.clone(),
            };
            record = Some(built);
        }
        if let Err(err) = cache.save(&stat_path) {
            eprintln!("den: warning: {err:#}");
        }
        let record = record.expect("a build has at least one step");
        Ok((parent.key, record, watched))
    }

    fn reusable(&self, key: &Digest) -> Option<Record> {
        match self.options.force {
            true => None,
            false => record::load(self.store, key),
        }
    }

    /// Builds one step under its lock; another den that built it
    /// meanwhile leaves its record to reuse.
    fn build_step(
        &self,
        ctx: &step::StepContext<'_>,
        planned: step::Planned<'_>,
        parent: &Parent,
        key: &Digest,
    ) -> Result<Record> {
        let lock_path = self.store.lock_path(&format!("build-{}", key.hex()));
        let (_lock, waited) = lock_exclusive_or_wait(&lock_path, || {
            eprintln!(
                "den: {}: {}: waiting for another den building the same step",
                ctx.container, ctx.label
            );
        })?;
        if waited && let Some(built) = record::load(self.store, key) {
            step::announce_cached(ctx, planned.step);
            return Ok(built);
        }
        step::build(ctx, planned, parent, key)
    }
}
