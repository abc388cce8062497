//! `den run <command> [args…]`: a command defined in den.yaml.

use anyhow::{Result, bail};

use crate::config::Run;
use crate::context::Context;
use crate::launch::{self, NetChoice, Request};

pub fn execute(
    ctx: &Context,
    name: &str,
    args: Vec<String>,
    mut net: NetChoice,
    preserved_fds: u32,
) -> Result<i32> {
    let (project, cwd) = super::current_project()?;
    let Some(command) = project.config.commands.get(name) else {
        bail!("{}", unknown_command(name, project.config.commands.keys()));
    };
    if !command.accepts_arguments && !args.is_empty() {
        bail!("command `{name}` takes no arguments (accepts-arguments: false), but got {args:?}");
    }
    let argv = match &command.run {
        // The command's name becomes $0, so "$@" in the script is the arguments.
        Run::Shell(script) => ["/bin/sh", "-c", script, name]
            .iter()
            .map(|s| s.to_string())
            .chain(args)
            .collect(),
        Run::Argv(argv) => argv.iter().cloned().chain(args).collect(),
    };
    net.network = net.network.or(command.network);
    net.ports.splice(0..0, command.ports.iter().cloned());
    launch::run(
        ctx,
        Request {
            project: &project,
            container: &command.container,
            argv,
            environ: command
                .environ
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            net,
            cwd: &cwd,
            preserved_fds,
        },
    )
}

fn unknown_command<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    let mut message = format!("den.yaml has no command `{name}`");
    if let Some(close) = crate::config::suggest(name, known.iter().map(|s| s.as_str())) {
        message.push_str(&format!("; did you mean `{close}`?"));
    }
    if known.is_empty() {
        message.push_str("; it defines no commands");
    } else {
        let list: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
        message.push_str(&format!("\n  commands: {}", list.join(", ")));
    }
    message
}
