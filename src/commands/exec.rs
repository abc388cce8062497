//! `den exec <container> -- <argv…>`: any program in a project's container.

use anyhow::Result;

use crate::context::Context;
use crate::launch::{self, NetChoice, Request};

pub fn execute(
    ctx: &Context,
    container: &str,
    argv: Vec<String>,
    net: NetChoice,
    preserved_fds: u32,
) -> Result<i32> {
    let (project, cwd) = super::current_project()?;
    super::check_container(&project, container)?;
    launch::run(
        ctx,
        Request {
            project: &project,
            container,
            argv,
            environ: Vec::new(),
            net,
            cwd: &cwd,
            preserved_fds,
        },
    )
}
