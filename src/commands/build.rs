//! `den build [<container>…] [--force]`: build the project's containers
//! (all by default) now, rather than on their first `den run`.

use anyhow::Result;

use crate::build::{self, Options};
use crate::context::Context;

pub fn execute(ctx: &Context, containers: &[String], force: bool) -> Result<i32> {
    let (project, _) = super::current_project()?;
    let names = super::selected_containers(&project, containers)?;
    for name in &names {
        let image = build::image(ctx, &project, name, Options { force })?;
        println!("{name}: {}", image.id);
    }
    Ok(0)
}
