//! `den pull [--platform os/arch[/variant]] [--quiet] <ref>`: fetch an
//! image from a registry into the store. Works outside a project.
//!
//! On a terminal: live progress bars on stderr. Otherwise one plain line
//! per event on stdout: `resolving <ref>`, `fetching <digest12> <size>`,
//! `done <digest12> <rate>`, `already present <digest12>`. Either way the
//! last line, on stdout, is `pulled <ref> <manifest digest>`; `--quiet`
//! prints only that one. See `image::progress`.

use anyhow::{Context as _, Result};

use crate::context::Context;
use crate::image::Platform;
use crate::image::progress::{Reporter, explain_disk_full};
use crate::image::registry::Reference;

pub fn execute(ctx: &Context, reference: &str, platform: Option<&str>, quiet: bool) -> Result<i32> {
    let parsed = Reference::parse(reference)
        .map_err(|reason| anyhow::anyhow!("`{reference}` is not an image reference: {reason}"))?;
    let wanted = match platform {
        Some(text) => Platform::parse(text).map_err(anyhow::Error::msg)?,
        None => Platform::host(),
    };
    let store = ctx.store()?;
    let reporter = Reporter::for_pull(quiet, ctx.terminal);
    reporter.line(&format!("resolving {parsed}"));
    let pulled = store.pull(&parsed, &wanted, &|event| reporter.event(event));
    // Bars gone before the error (if any) is printed.
    reporter.clear();
    let pulled = pulled
        .map_err(|err| explain_disk_full(err, store))
        .with_context(|| format!("cannot pull `{parsed}`"))?;
    reporter.finish(&parsed, &pulled);
    Ok(0)
}
