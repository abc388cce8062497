//! `den pull [--platform os/arch[/variant]] [--quiet] <ref>`: fetch an
//! image from a registry into the store. Works outside a project.
//!
//! One plain line per event on stdout:
//! `resolving <ref>`, `fetching <digest12> <size>`, `done <digest12> <rate>`,
//! `already present <digest12>`, and finally `pulled <ref> <manifest digest>`.
//! `--quiet` prints only the last line.

use anyhow::{Context, Result};

use crate::image::registry::Reference;
use crate::image::{Event, Platform, Store};

pub fn execute(reference: &str, platform: Option<&str>, quiet: bool) -> Result<i32> {
    let parsed = Reference::parse(reference)
        .map_err(|reason| anyhow::anyhow!("`{reference}` is not an image reference: {reason}"))?;
    let wanted = match platform {
        Some(text) => Platform::parse(text).map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let store = Store::open_default()?;
    if !quiet {
        println!("resolving {parsed}");
    }
    let progress = |event: Event<'_>| {
        if quiet {
            return;
        }
        match event {
            Event::Fetching { layer } => {
                println!("fetching {} {}", short(layer), human_size(layer.size));
            }
            Event::Done { layer, elapsed } => {
                let rate = layer.size as f64 / elapsed.as_secs_f64().max(1e-6);
                println!("done {} {}/s", short(layer), human_size(rate as u64));
            }
            Event::Present { layer } => println!("already present {}", short(layer)),
        }
    };
    let pulled = store
        .pull(&parsed, &wanted, &progress)
        .with_context(|| format!("cannot pull `{parsed}`"))?;
    // den may fork into user namespaces after a pull: nothing may be left running.
    let single = crate::image::settle_threads();
    debug_assert!(single, "a pull left threads behind");
    println!("pulled {parsed} {}", pulled.manifest);
    Ok(0)
}

fn short(layer: &crate::image::LayerBlob) -> &str {
    &layer.digest.hex()[..12]
}

/// Decimal units, as registries and Docker show sizes.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1500), "1.5 kB");
        assert_eq!(human_size(63_000_000), "63.0 MB");
    }
}
