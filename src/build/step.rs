//! One step: what it reads from the project (its inputs, part of its
//! key), and running it in a container whose overlay upper dir, on the
//! store's disk, becomes its layer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::copy::{self, CopyInputs, CopySpec, StatCache, Watched};
use super::record::{self, Record};
use super::{capture, host, output, recipes};
use crate::config::step::{Download, Text};
use crate::config::{Step, StepKind};
use crate::context::Context;
use crate::image::Store;
use crate::image::digest::Digest;
use crate::image::lock::{FileLock, TempEntry, lock_exclusive_or_wait};
use crate::userns::{self, Action, Bind, BuildStep, Mode, RUN_DEN, Spec};

/// Where copy steps see the project, read-only.
const PROJECT_MOUNT: &str = "/run/den/project";
/// Where a download step sees the verified file.
const DOWNLOAD_MOUNT: &str = "/run/den/download";

/// A step with what it read from the project.
pub struct Planned<'a> {
    pub step: &'a Step,
    /// Bytes hashed into the key.
    pub inputs: Vec<u8>,
    pub watched: Vec<Watched>,
    data: Data,
}

enum Data {
    None,
    Copy(CopyInputs),
    /// The requirements file's content.
    Pip(Option<Vec<u8>>),
    /// package.json and package-lock.json.
    Npm(Vec<u8>, Vec<u8>),
}

/// Reads (and hashes) what `step` takes from the project at `root`.
pub fn plan<'a>(root: &Path, step: &'a Step, cache: &mut StatCache) -> Result<Planned<'a>> {
    let mut planned = Planned {
        step,
        inputs: Vec::new(),
        watched: Vec::new(),
        data: Data::None,
    };
    match &step.kind {
        StepKind::Copy(spec) => {
            let spec = CopySpec {
                from: spec.from.clone(),
                to: spec.to.clone(),
                exclude: spec.exclude.clone(),
            };
            let inputs = copy::scan(root, &spec, cache)?;
            for warning in &inputs.warnings {
                eprintln!("den: warning: {warning}");
            }
            planned.inputs = inputs.key_bytes();
            planned.watched = inputs.watched.clone();
            planned.data = Data::Copy(inputs);
        }
        StepKind::Pip(pip) => {
            let requirements = match &pip.requirements {
                Some(file) => Some(planned.read(root, file, cache)?),
                None => None,
            };
            planned.data = Data::Pip(requirements);
        }
        StepKind::Npm(npm) => {
            let [package, lock] = recipes::npm_inputs(npm);
            let package = planned.read(root, &package, cache)?;
            let lock = planned.read(root, &lock, cache).with_context(|| {
                format!(
                    "the `npm` step runs `npm ci`, which needs {}: run `npm install` to create it",
                    recipes::npm_inputs(npm)[1].display()
                )
            })?;
            planned.data = Data::Npm(package, lock);
        }
        _ => {}
    }
    Ok(planned)
}

impl Planned<'_> {
    /// A project file the step reads whole: watched, and hashed into the key.
    fn read(&mut self, root: &Path, file: &Path, cache: &mut StatCache) -> Result<Vec<u8>> {
        let spec = CopySpec {
            from: file.to_path_buf(),
            to: "/".into(),
            exclude: Vec::new(),
        };
        let scanned = copy::scan(root, &spec, cache)?;
        self.watched.extend(scanned.watched);
        let bytes = std::fs::read(root.join(file))
            .with_context(|| format!("cannot read `{}`", root.join(file).display()))?;
        self.inputs.extend(Digest::of(&bytes).hex().as_bytes());
        Ok(bytes)
    }
}

/// Everything a step runs with besides itself.
pub struct StepContext<'a> {
    pub ctx: &'a Context,
    pub store: &'a Store,
    pub project_root: &'a Path,
    pub container: &'a str,
    pub workdir: Option<&'a str>,
    pub host_ca: bool,
    pub network: userns::Network,
    pub confinement: crate::userns::Confinement,
    /// e.g. `step 2/5`.
    pub label: String,
}

/// The image below the step: its layers and environment.
pub struct Parent {
    pub key: Digest,
    pub layers: Vec<String>,
    pub env: Vec<String>,
}

/// Runs the step and records its layer under `key`.
pub fn build(
    ctx: &StepContext<'_>,
    planned: Planned<'_>,
    parent: &Parent,
    key: &Digest,
) -> Result<Record> {
    let step = planned.step;
    let summary = summary(&step.kind);
    let mut record = Record {
        parent: parent.key.hex().to_string(),
        step: summary.clone(),
        layers: parent.layers.clone(),
        env: parent.env.clone(),
        created: record::now(),
    };
    if let StepKind::Env(vars) = &step.kind {
        for (name, value) in vars {
            set_env(&mut record.env, name, value);
        }
        record::write_json(
            ctx.store,
            &ctx.store.paths().build_record(key.hex()),
            &record,
        )?;
        return Ok(record);
    }
    announce(ctx, &summary);
    let started = Instant::now();
    let layer = TempEntry::dir(&ctx.store.paths().tmp(), "build")?;
    for dir in ["fs", "work"] {
        std::fs::create_dir(layer.path().join(dir))?;
    }
    // The upper dir's mode becomes the container root's.
    std::fs::set_permissions(
        layer.path().join("fs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let _cache_lock = run_in_container(ctx, &planned, parent, layer.path(), &mut record)?;
    let den_made: Vec<PathBuf> = userns::MOUNT_POINTS.iter().map(PathBuf::from).collect();
    let captured = capture::capture(layer.path(), &den_made)?;
    let name = key.hex().to_string();
    let dest = ctx.store.paths().layer(&name);
    replace_layer(ctx.store, layer, &dest)?;
    record.layers.push(name);
    record::write_json(
        ctx.store,
        &ctx.store.paths().build_record(key.hex()),
        &record,
    )?;
    eprintln!(
        "den: {}: {} done in {:.1} s ({} entries, {})",
        ctx.container,
        ctx.label,
        started.elapsed().as_secs_f64(),
        captured.entries,
        crate::image::progress::human_size(captured.bytes),
    );
    Ok(record)
}

fn announce(ctx: &StepContext<'_>, summary: &str) {
    eprintln!("den: {}: {}: {summary}", ctx.container, ctx.label);
}

/// Prints the line of a step that is already built.
pub fn announce_cached(ctx: &StepContext<'_>, step: &Step) {
    eprintln!(
        "den: {}: {}: {} (cached)",
        ctx.container,
        ctx.label,
        summary(&step.kind)
    );
}

/// A forced rebuild replaces the layer of the same key.
fn replace_layer(store: &Store, layer: TempEntry, dest: &Path) -> Result<()> {
    if dest.exists() {
        let old = TempEntry::dir(&store.paths().tmp(), "replaced")?;
        std::fs::rename(dest, old.path().join("layer"))
            .with_context(|| format!("cannot move `{}` aside", dest.display()))?;
    }
    layer.persist(dest)
}

/// Runs the step's container; returns the host cache lock it held, to
/// be released once the layer is captured.
fn run_in_container(
    ctx: &StepContext<'_>,
    planned: &Planned<'_>,
    parent: &Parent,
    layer_dir: &Path,
    record: &mut Record,
) -> Result<Option<FileLock>> {
    let step = planned.step;
    let layers: Vec<PathBuf> = parent
        .layers
        .iter()
        .map(|name| ctx.store.paths().layer_fs(name))
        .collect();
    let mut env = parent.env.clone();
    set_env(&mut env, "DEBIAN_FRONTEND", "noninteractive");
    set_env(&mut env, "APT_CONFIG", &format!("{RUN_DEN}/apt.conf"));
    for (name, value) in host::proxy_env(&ctx.ctx.env.proxies) {
        set_env(&mut env, &name, &value);
    }
    let mut run_files = vec![(
        "apt.conf".to_string(),
        recipes::APT_SANDBOX.as_bytes().to_vec(),
    )];
    let mut binds = Vec::new();
    if ctx.host_ca
        && let Some((bind, vars)) = host::ca_bind_and_env(ctx.ctx.env.ssl_cert_file.as_deref())
    {
        binds.push(bind);
        for (name, value) in vars {
            set_env(&mut env, &name, &value);
        }
    }
    let mut argv = Vec::new();
    let mut action = Action::Exec;
    let mut cache_lock = None;
    let mut recipe = None;
    match (&step.kind, &planned.data) {
        (StepKind::Run(script), _) => argv = shell(script),
        (StepKind::Install(packages), _) => {
            recipe = Some(recipes::install(&layers, packages, &ctx.ctx.cache()?)?)
        }
        (StepKind::Pip(pip), Data::Pip(requirements)) => {
            recipe = Some(recipes::pip(pip, requirements.clone(), &ctx.ctx.cache()?)?);
            if let Some(venv) = &pip.venv {
                let path = env_value(&record.env, "PATH").unwrap_or(userns::DEFAULT_PATH);
                let path = format!("{venv}/bin:{path}");
                set_env(&mut record.env, "PATH", &path);
                set_env(&mut record.env, "VIRTUAL_ENV", venv);
            }
        }
        (StepKind::Npm(npm), Data::Npm(package, lock)) => {
            recipe = Some(recipes::npm(
                npm,
                package.clone(),
                lock.clone(),
                &ctx.ctx.cache()?,
            )?)
        }
        (StepKind::Copy(spec), Data::Copy(inputs)) => {
            binds.push(Bind {
                source: ctx.project_root.to_path_buf(),
                target: PROJECT_MOUNT.into(),
                read_only: true,
            });
            let (inputs, to) = (inputs.clone(), spec.to.clone());
            action = Action::Call(Arc::new(move || {
                copy::apply(Path::new(PROJECT_MOUNT), &inputs, &to)
            }));
        }
        (StepKind::Download(download), _) => {
            binds.push(Bind {
                source: super::download::fetch(ctx.ctx, download)?,
                target: DOWNLOAD_MOUNT.into(),
                read_only: true,
            });
            let download = download.clone();
            action = Action::Call(Arc::new(move || place_download(&download)));
        }
        (StepKind::Text(text), _) => {
            let text = text.clone();
            action = Action::Call(Arc::new(move || write_text(&text)));
        }
        (kind, _) => bail!(
            "step `{}` has no inputs planned (a bug in den)",
            kind.name()
        ),
    }
    if let Some(recipe) = recipe {
        argv = shell(&recipe.script);
        for (name, value) in &recipe.env {
            set_env(&mut env, name, value);
        }
        binds.extend(recipe.binds);
        // The install recipe's apt.conf replaces the plain one.
        for (name, contents) in recipe.run_files {
            run_files.retain(|(existing, _)| *existing != name);
            run_files.push((name, contents));
        }
        if let Some(lock) = &recipe.lock {
            cache_lock = Some(lock_cache(lock)?);
        }
    }
    let spec = Spec {
        layers,
        scratch: ctx.store.scratch_dir()?,
        cwd: ctx.workdir.unwrap_or("/").to_string(),
        argv,
        env,
        hostname: ctx.container.to_string(),
        network: ctx.network.clone(),
        binds,
        confinement: ctx.confinement,
        mode: Mode::BuildStep(BuildStep {
            layer_dir: layer_dir.to_path_buf(),
            run_files,
            output: None,
            action,
        }),
    };
    let (code, captured) = output::run_relayed(spec, ctx.ctx.terminal)?;
    if code != 0 {
        return Err(failed(ctx, step, code, &captured));
    }
    Ok(cache_lock)
}

/// Prints what a failing step wrote (on a terminal only its tail was
/// shown) and fails with its place in den.yaml.
fn failed(ctx: &StepContext<'_>, step: &Step, code: i32, captured: &[u8]) -> anyhow::Error {
    output::print_captured(captured);
    anyhow::anyhow!(
        "{}:{}:{}: {} of container `{}` (`{}`) failed with exit code {code}; \
         nothing was recorded and the previous build stays usable",
        ctx.project_root.join(crate::config::FILE_NAME).display(),
        step.line,
        step.column,
        ctx.label,
        ctx.container,
        step.kind.name(),
    )
}

fn lock_cache(path: &Path) -> Result<FileLock> {
    let (lock, _) = lock_exclusive_or_wait(path, || {
        eprintln!(
            "den: waiting for another den using the package cache {}",
            path.parent().unwrap_or(path).display()
        );
    })?;
    Ok(lock)
}

fn shell(script: &str) -> Vec<String> {
    ["/bin/sh", "-ec", script].map(String::from).to_vec()
}

/// In the container: the verified download to its place.
fn place_download(download: &Download) -> Result<()> {
    let to = Path::new(&download.to);
    create_parent(to)?;
    let _ = std::fs::remove_file(to);
    std::fs::copy(DOWNLOAD_MOUNT, to).with_context(|| format!("cannot write {}", to.display()))?;
    set_mode(to, download.mode)
}

/// In the container: a `text` step's file.
fn write_text(text: &Text) -> Result<()> {
    let to = Path::new(&text.to);
    create_parent(to)?;
    let _ = std::fs::remove_file(to);
    std::fs::write(to, &text.content).with_context(|| format!("cannot write {}", to.display()))?;
    set_mode(to, text.mode)
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display())),
        None => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// One line saying what a step does.
pub fn summary(kind: &StepKind) -> String {
    let text = match kind {
        StepKind::Run(script) => {
            let lines: Vec<&str> = script.lines().filter(|l| !l.trim().is_empty()).collect();
            match lines.as_slice() {
                [one] => one.trim().to_string(),
                [first, rest @ ..] => format!("{} (+{} lines)", first.trim(), rest.len()),
                [] => String::new(),
            }
        }
        StepKind::Install(packages) => packages.join(" "),
        StepKind::Copy(copy) => format!("{} → {}", copy.from.display(), copy.to),
        StepKind::Env(vars) => vars.keys().cloned().collect::<Vec<_>>().join(" "),
        StepKind::Download(download) => format!("{} → {}", download.url, download.to),
        StepKind::Text(text) => text.to.clone(),
        StepKind::Pip(pip) => {
            let mut words = pip.packages.clone();
            if let Some(file) = &pip.requirements {
                words.push(format!("-r {}", file.display()));
            }
            words.join(" ")
        }
        StepKind::Npm(npm) => format!("npm ci in {}", npm.dir),
    };
    let text: String = text.chars().take(100).collect();
    format!("{} {text}", kind.name())
}

pub fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    match env
        .iter_mut()
        .find(|existing| existing.split('=').next() == Some(name))
    {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

fn env_value<'e>(env: &'e [String], name: &str) -> Option<&'e str> {
    env.iter()
        .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
}
