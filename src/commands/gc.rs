//! `den gc [--dry-run]`: free the store's unused images, layers, blobs
//! and leftovers. Refuses while another den uses the store.

use anyhow::Result;

use crate::context::Context;

pub fn execute(ctx: &Context, dry_run: bool) -> Result<i32> {
    let store = ctx.store()?;
    let report = store.gc(dry_run, &|store, report| {
        crate::build::collect_garbage(store, dry_run, report)
    })?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let freed = if dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {} image(s), {} layer(s), {} blob(s), {} build step(s), {} temporary entr{}; {freed} {}",
        report.images,
        report.layers,
        report.blobs,
        report.builds,
        report.tmp,
        if report.tmp == 1 { "y" } else { "ies" },
        crate::image::progress::human_size(report.bytes)
    );
    Ok(0)
}
