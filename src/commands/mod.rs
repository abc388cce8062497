//! One module per subcommand, as `cli` dispatches them: each takes the
//! `Context` and its arguments and calls the rooms that do the work
//! (`launch` for run, exec and shell; `build`, `base`, `image`), printing
//! what the user sees.

pub mod build;
pub mod exec;
pub mod gc;
pub mod images;
pub mod list;
pub mod login;
pub mod logout;
pub mod pull;
pub mod rmi;
pub mod run;
pub mod shell;
pub mod update;

use anyhow::Result;

use crate::config::{self, Project};

/// The project around the current directory, and that directory.
fn current_project() -> Result<(Project, std::path::PathBuf)> {
    let cwd = std::env::current_dir()?;
    let project = config::load(&cwd)?;
    Ok((project, cwd))
}

/// The containers named (each checked), or all of den.yaml's when none is.
fn selected_containers(project: &Project, names: &[String]) -> Result<Vec<String>> {
    for name in names {
        check_container(project, name)?;
    }
    Ok(match names.is_empty() {
        true => project.config.containers.keys().cloned().collect(),
        false => names.to_vec(),
    })
}

/// A clear error, with a did-you-mean, for a container den.yaml lacks.
fn check_container(project: &Project, name: &str) -> Result<()> {
    let containers = &project.config.containers;
    if containers.contains_key(name) {
        return Ok(());
    }
    let mut message = format!("den.yaml has no container `{name}`");
    if let Some(close) = config::suggest(name, containers.keys().map(String::as_str)) {
        message.push_str(&format!("; did you mean `{close}`?"));
    }
    let names: Vec<&str> = containers.keys().map(String::as_str).collect();
    message.push_str(&format!("\n  containers: {}", names.join(", ")));
    anyhow::bail!(message)
}
