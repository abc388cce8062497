//! `den update [<container>…]`: re-resolve the registry tags of the
//! project's containers (all by default), pull what changed and rewrite
//! den.lock. One line per container: `<name>: <old12> → <new12>`,
//! `<name>: up to date (<digest12>)` or why it has nothing to update.

use anyhow::Result;

use crate::base::{self, Pins};
use crate::config::Base;
use crate::context::Context;
use crate::image::{Source, Store};

pub fn execute(ctx: &Context, containers: &[String]) -> Result<i32> {
    let (project, _) = super::current_project()?;
    let names = super::selected_containers(&project, containers)?;
    let store = ctx.store()?;
    let mut pins = Pins::load(&project)?;
    let mut result = Ok(());
    for name in &names {
        let from = &project.config.containers[name.as_str()].from;
        let line = match from {
            Base::Image(source) => match base::pinnable(source) {
                Some(reference) => update_registry(store, &mut pins, name, reference),
                None if matches!(source, Source::Registry(_)) => {
                    Ok(format!("{name}: pinned by digest in den.yaml ({from})"))
                }
                None => Ok(format!("{name}: not a registry image ({from})")),
            },
            Base::Bootstrap(bootstrap) => {
                update_bootstrap(ctx, &project, name, bootstrap, &mut pins)
            }
            Base::Container(_) => Ok(format!("{name}: not a registry image ({from})")),
        };
        match line {
            Ok(line) => println!("{line}"),
            Err(err) => {
                // The others still get updated; den exits 125 at the end.
                eprintln!("den: {name}: cannot update `{from}`: {err:#}");
                result = Err(anyhow::anyhow!("some containers could not be updated"));
            }
        }
    }
    pins.save()?;
    result.map(|()| 0)
}

/// Pulls what a tag names now; says whether its pin changed.
fn update_registry(
    store: &Store,
    pins: &mut Pins,
    name: &str,
    reference: &crate::image::registry::Reference,
) -> Result<String> {
    let (old, new) = base::update_registry(store, pins, name, reference)?;
    Ok(match old {
        Some(old) if old == new => format!("{name}: up to date ({})", short(&new.digest)),
        Some(old) => format!("{name}: {} → {}", short(&old.digest), short(&new.digest)),
        None => format!("{name}: (new) → {}", short(&new.digest)),
    })
}

/// Re-resolves a bootstrapped system; says how its packages changed.
fn update_bootstrap(
    ctx: &Context,
    project: &crate::config::Project,
    name: &str,
    bootstrap: &crate::config::Bootstrap,
    pins: &mut Pins,
) -> Result<String> {
    let (old, new) = crate::build::bootstrap::update(ctx, project, name, bootstrap, pins)?;
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
