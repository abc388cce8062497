//! `den exec <container> -- <argv…>`: any program in a project's container.

use anyhow::Result;

use crate::launch::{self, NetChoice, Request};

pub fn execute(
    container: &str,
    argv: Vec<String>,
    net: NetChoice,
    preserved_fds: u32,
) -> Result<i32> {
    let (project, cwd) = super::current_project()?;
    super::check_container(&project, container)?;
    launch::run(Request {
        project: &project,
        container,
        argv,
        environ: Vec::new(),
        net,
        cwd: &cwd,
        preserved_fds,
    })
}
