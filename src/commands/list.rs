//! `den` alone or `den list`: the project's commands and what they do.

use anyhow::Result;

pub fn execute() -> Result<i32> {
    let (project, _) = super::current_project()?;
    let commands = &project.config.commands;
    if commands.is_empty() {
        println!(
            "{} defines no commands; see docs/config.md",
            project.file.display()
        );
        return Ok(0);
    }
    println!(
        "Commands in {} (den run <command>):",
        project.file.display()
    );
    let width = commands.keys().map(String::len).max().unwrap_or(0);
    for (name, command) in commands {
        match &command.description {
            Some(description) => println!("  {name:width$}  {description}"),
            None => println!("  {name}"),
        }
    }
    Ok(0)
}
