//! `den shell [<container>]`: an interactive shell, bash where the image has it.

use anyhow::{Context as _, Result};

use crate::context::Context;
use crate::launch::{self, NetChoice, Request};

const SHELL: &str = "command -v bash >/dev/null 2>&1 && exec bash -l; exec sh -l";

pub fn execute(
    ctx: &Context,
    container: Option<&str>,
    net: NetChoice,
    preserved_fds: u32,
) -> Result<i32> {
    let (project, cwd) = super::current_project()?;
    let container = match container {
        Some(name) => {
            super::check_container(&project, name)?;
            name.to_string()
        }
        None => project
            .config
            .containers
            .keys()
            .next()
            .cloned()
            .context("den.yaml defines no containers")?,
    };
    let argv = ["/bin/sh", "-c", SHELL].map(String::from).to_vec();
    launch::run(
        ctx,
        Request {
            project: &project,
            container: &container,
            argv,
            environ: Vec::new(),
            net,
            cwd: &cwd,
            preserved_fds,
        },
    )
}
