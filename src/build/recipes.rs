//! How den runs the package managers: `install` (apt, apk or dnf, found
//! in the image), `pip` and `npm`. Each recipe is a shell script plus
//! the variables, files and host caches it needs. Download caches live
//! in the user's cache dir, bound under /run/den/cache, so they are
//! shared across projects and never land in a layer.
//!
//! Changing a recipe changes what a step builds: bump `key::VERSION`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::layers;
use crate::config::step::{Npm, Pip};
use crate::context::Cache;
use crate::userns::{Bind, RUN_DEN};

/// apt settings for every build step: apt drops to `_apt` for downloads
/// unless told not to, and that user cannot exist under a one-id map.
pub const APT_SANDBOX: &str = "APT::Sandbox::User \"root\";\n";

/// A script with what it needs around it.
#[derive(Debug, Default)]
pub struct Recipe {
    pub script: String,
    pub env: Vec<(String, String)>,
    pub binds: Vec<Bind>,
    pub run_files: Vec<(String, Vec<u8>)>,
    /// A host cache den must hold `den.lock` of while the step runs:
    /// apt fails at once, rather than waits, on a lock held elsewhere.
    pub lock: Option<PathBuf>,
}

/// The package managers `install` knows, in the order they are looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Apt,
    Apk,
    Dnf,
    Microdnf,
}

fn detect(layers: &[PathBuf]) -> Option<Manager> {
    let candidates = [
        (Manager::Apt, "usr/bin/apt-get"),
        (Manager::Apt, "bin/apt-get"),
        (Manager::Apk, "sbin/apk"),
        (Manager::Apk, "usr/sbin/apk"),
        (Manager::Dnf, "usr/bin/dnf"),
        (Manager::Microdnf, "usr/bin/microdnf"),
    ];
    candidates
        .into_iter()
        .find(|(_, path)| layers::has_file(layers, path))
        .map(|(manager, _)| manager)
}

/// `install: [packages]` for the image made of `layers`.
pub fn install(layers: &[PathBuf], packages: &[String], cache: &Cache) -> Result<Recipe> {
    let Some(manager) = detect(layers) else {
        bail!(
            "`install` needs apt-get, apk or dnf in the image, and it has none; \
             use a `run` step with the image's own tools"
        );
    };
    let system = format!("{}-{}", layers::os_name(layers), std::env::consts::ARCH);
    let list = quote_all(packages);
    let cache = cache.packages(&format!("{}/{system}", manager.cache_name()))?;
    let target = format!("{RUN_DEN}/cache/{}", manager.cache_name());
    let mut recipe = Recipe {
        binds: vec![Bind {
            source: cache.clone(),
            target: target.clone(),
            read_only: false,
        }],
        lock: Some(cache.join("den.lock")),
        ..Recipe::default()
    };
    match manager {
        Manager::Apt => {
            for dir in ["archives/partial", "lists/partial"] {
                std::fs::create_dir_all(cache.join(dir))?;
            }
            recipe
                .run_files
                .push(("apt.conf".into(), apt_conf(&target).into_bytes()));
            recipe.script = format!(
                "apt-get update -q\napt-get install -y -q {list}\n\
                 rm -f /var/cache/debconf/*-old /var/lib/dpkg/*-old\n"
            );
        }
        Manager::Apk => {
            recipe.script = format!("apk add --cache-dir {target} {list}\n");
        }
        Manager::Dnf | Manager::Microdnf => {
            let program = match manager {
                Manager::Dnf => "dnf",
                _ => "microdnf",
            };
            recipe.script = format!(
                "{program} install -y --setopt=install_weak_deps=False \
                 --setopt=keepcache=True --setopt=cachedir={target} {list}\n"
            );
        }
    }
    Ok(recipe)
}

impl Manager {
    fn cache_name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Apk => "apk",
            Manager::Dnf | Manager::Microdnf => "dnf",
        }
    }
}

/// Package lists and archives in the host cache (not the layer), no
/// recommends, no prompts, no fsync (layers are never fsynced anyway).
fn apt_conf(cache: &str) -> String {
    format!(
        "{APT_SANDBOX}\
         APT::Install-Recommends \"false\";\n\
         APT::Install-Suggests \"false\";\n\
         Dir::Cache::pkgcache \"\";\n\
         Dir::Cache::srcpkgcache \"\";\n\
         Dir::Cache::Archives \"{cache}/archives/\";\n\
         Dir::State::Lists \"{cache}/lists/\";\n\
         Dpkg::Use-Pty \"false\";\n\
         Acquire::Retries \"3\";\n\
         Acquire::https::CaInfo \"{RUN_DEN}/{ca}\";\n\
         Dpkg::Options {{ \"--force-unsafe-io\"; \"--force-confdef\"; \"--force-confold\"; }};\n",
        ca = super::host::CA_FILE,
    )
}

/// `pip`: into `venv` (created when missing) or the system's Python,
/// which Debian marks externally managed (PEP 668); in a container
/// image that protection has nothing to protect.
pub fn pip(pip: &Pip, requirements: Option<Vec<u8>>, cache: &Cache) -> Result<Recipe> {
    let (bind, target) = shared_cache("pip", cache)?;
    let mut args = quote_all(&pip.packages);
    let mut run_files = Vec::new();
    if let Some(bytes) = requirements {
        run_files.push(("requirements.txt".to_string(), bytes));
        args.push_str(&format!(" -r {RUN_DEN}/requirements.txt"));
    }
    let script = match &pip.venv {
        Some(venv) => {
            let venv = quote(venv);
            format!(
                "[ -x {venv}/bin/pip ] || python3 -m venv {venv}\n{venv}/bin/pip install {args}\n"
            )
        }
        None => format!(
            "if ! python3 -m pip --version >/dev/null 2>&1; then\n  \
             echo 'den: pip: this image has no `python3 -m pip`; install python3-pip first, or set `venv:` (needs python3-venv)' >&2\n  \
             exit 1\nfi\npython3 -m pip install {args}\n"
        ),
    };
    let env = [
        ("PIP_CACHE_DIR", target.as_str()),
        ("PIP_BREAK_SYSTEM_PACKAGES", "1"),
        ("PIP_ROOT_USER_ACTION", "ignore"),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        ("PIP_NO_INPUT", "1"),
        ("PIP_PROGRESS_BAR", "off"),
    ];
    Ok(Recipe {
        script,
        env: owned(&env),
        binds: vec![bind],
        run_files,
        lock: None,
    })
}

/// A cache shared by all projects, bound at /run/den/cache/<kind>; also
/// returns that path.
fn shared_cache(kind: &str, cache: &Cache) -> Result<(Bind, String)> {
    let target = format!("{RUN_DEN}/cache/{kind}");
    let bind = Bind {
        source: cache.packages(kind)?,
        target: target.clone(),
        read_only: false,
    };
    Ok((bind, target))
}

/// `npm ci` in `dir` with the project's package.json and lock file.
pub fn npm(npm: &Npm, package: Vec<u8>, lock: Vec<u8>, cache: &Cache) -> Result<Recipe> {
    let (bind, target) = shared_cache("npm", cache)?;
    let dir = quote(&npm.dir);
    let script = format!(
        "mkdir -p {dir}\ncat {RUN_DEN}/package.json > {dir}/package.json\n\
         cat {RUN_DEN}/package-lock.json > {dir}/package-lock.json\ncd {dir}\nnpm ci\n"
    );
    let env = [
        ("npm_config_cache", target.as_str()),
        ("npm_config_update_notifier", "false"),
        ("npm_config_fund", "false"),
        ("npm_config_audit", "false"),
        ("npm_config_progress", "false"),
    ];
    Ok(Recipe {
        script,
        env: owned(&env),
        binds: vec![bind],
        run_files: vec![
            ("package.json".into(), package),
            ("package-lock.json".into(), lock),
        ],
        lock: None,
    })
}

/// The files an `npm` step reads, relative to the project root.
pub fn npm_inputs(npm: &Npm) -> [PathBuf; 2] {
    let dir = Path::new(&npm.from);
    [dir.join("package.json"), dir.join("package-lock.json")]
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// `word` quoted for /bin/sh.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:+@%,".contains(&b));
    match safe {
        true => word.to_string(),
        false => format!("'{}'", word.replace('\'', "'\\''")),
    }
}

fn quote_all(words: &[String]) -> String {
    words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_and_quotes_the_rest() {
        assert_eq!(quote("python3"), "python3");
        assert_eq!(quote("requests>=2"), "'requests>=2'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
