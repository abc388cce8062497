//! `den update [<container>…]`: re-resolve the registry tags of the
//! project's containers (all by default), pull what changed and rewrite
//! den.lock. One line per container: `<name>: <old12> → <new12>`,
//! `<name>: up to date (<digest12>)` or why it has nothing to update.

use anyhow::{Context, Result};

use crate::config::Base;
use crate::config::lockfile::{Entry, LockFile};
use crate::image::{Platform, Source, Store};

pub fn execute(containers: &[String]) -> Result<i32> {
    let (project, _) = super::current_project()?;
    let names = super::selected_containers(&project, containers)?;
    let store = Store::open_default()?;
    let mut lock = LockFile::load(&project.root)?;
    let mut result = Ok(());
    for name in &names {
        let from = &project.config.containers[name.as_str()].from;
        let reference = match from {
            Base::Image(Source::Registry(reference))
                if reference.tag.is_some() && reference.digest.is_none() =>
            {
                reference
            }
            Base::Image(Source::Registry(_)) => {
                println!("{name}: pinned by digest in den.yaml ({from})");
                continue;
            }
            Base::Bootstrap(bootstrap) => {
                match update_bootstrap(&store, &project, name, bootstrap, &mut lock) {
                    Ok(line) => println!("{line}"),
                    Err(err) => {
                        eprintln!("den: {name}: cannot update `{from}`: {err:#}");
                        result = Err(anyhow::anyhow!("some containers could not be updated"));
                    }
                }
                continue;
            }
            _ => {
                println!("{name}: not a registry image ({from})");
                continue;
            }
        };
        let pulled = match store
            .pull(reference, &Platform::host(), &|_| {})
            .with_context(|| format!("{name}: cannot update `{reference}`"))
        {
            Ok(pulled) => pulled,
            Err(err) => {
                // The others still get updated; den exits 125 at the end.
                eprintln!("den: {err:#}");
                result = Err(anyhow::anyhow!("some containers could not be updated"));
                continue;
            }
        };
        let entry = Entry {
            from: reference.to_string(),
            digest: pulled.top.to_string(),
            manifest: pulled.manifest.to_string(),
        };
        match lock.get_any(name) {
            Some(old) if *old == entry => {
                println!("{name}: up to date ({})", short(&entry.digest));
            }
            Some(old) => println!("{name}: {} → {}", short(&old.digest), short(&entry.digest)),
            None => println!("{name}: (new) → {}", short(&entry.digest)),
        }
        lock.set(name, entry);
    }
    // den forks no container here, but keep the invariant pulls promise.
    crate::image::settle_threads();
    let containers = &project.config.containers;
    lock.retain(|name| containers.contains_key(name));
    lock.save()?;
    result.map(|()| 0)
}

/// Re-resolves a bootstrapped system; says how its packages changed.
fn update_bootstrap(
    store: &Store,
    project: &crate::config::Project,
    name: &str,
    bootstrap: &crate::config::Bootstrap,
    lock: &mut LockFile,
) -> Result<String> {
    let (old, new) = crate::build::bootstrap::update(store, project, name, bootstrap, lock)?;
    let count = new.packages.len();
    let Some(old) = old.filter(|old| old.bootstrap == new.bootstrap) else {
        return Ok(format!(
            "{name}: (new) → {count} packages as of {}",
            new.date
        ));
    };
    let changed: Vec<String> = new
        .packages
        .iter()
        .filter(|(package, version)| old.packages.get(*package) != Some(version))
        .map(|(package, version)| match old.packages.get(package) {
            Some(before) => format!("{package} {before} → {version}"),
            None => format!("{package} (new) {version}"),
        })
        .collect();
    Ok(match changed.is_empty() {
        true => format!("{name}: up to date ({count} packages as of {})", new.date),
        false => format!(
            "{name}: {} of {count} packages changed: {}",
            changed.len(),
            changed.join(", ")
        ),
    })
}

/// The first 12 hex digits of a `sha256:<hex>` digest.
pub(crate) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}
