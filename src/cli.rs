//! Argument parsing and dispatch; each subcommand lives in `commands/`.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::config::Network;
use crate::context::{Context, Env};

#[derive(Parser, Debug)]
#[command(
    name = "den",
    version,
    about = "Rootless, daemonless developer containers",
    long_about = "Rootless, daemonless developer containers.\n\n\
        In a project directory, den reads den.yaml and runs its commands in \
        user-namespace containers: no root, no setuid helper, no daemon.\n\
        `den` alone lists the project's commands.",
    after_help = "Configuration: docs/config.md. Images are kept in $DEN_DATA_DIR (default ~/.local/share/den)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command defined in den.yaml, with any extra arguments
    Run {
        #[command(flatten)]
        net: LaunchArgs,
        /// The command's name in den.yaml
        command: String,
        /// Extra arguments for the command
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a program in one of the project's containers
    Exec {
        #[command(flatten)]
        net: LaunchArgs,
        /// The container's name in den.yaml
        container: String,
        /// The program and its arguments (default: the image's entrypoint and command)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Start an interactive shell in a container (default: the first in den.yaml)
    Shell {
        #[command(flatten)]
        net: LaunchArgs,
        container: Option<String>,
    },
    /// List the project's commands (what `den` alone does)
    List,
    /// Build containers' setup steps now (default: every container; see docs/config.md)
    Build {
        /// Rebuild every step, even those already built
        #[arg(long)]
        force: bool,
        /// Containers to build (default: all)
        containers: Vec<String>,
    },
    /// Fetch an image from a registry into the store (see docs/registry.md)
    Pull {
        /// The platform to pull from a multi-platform image (default: linux/<this machine>)
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
        /// Print only the final `pulled <ref> <digest>` line
        #[arg(long, short)]
        quiet: bool,
        /// `[host[:port]/]name[:tag][@digest]`, e.g. `python:3.12`
        reference: String,
    },
    /// Check a user name and password against a registry and save them (see docs/registry.md)
    Login {
        /// The user name (asked for on the terminal when not given)
        #[arg(long, short)]
        username: Option<String>,
        /// Read the password from stdin (default: ask on the terminal, without echo)
        #[arg(long)]
        password_stdin: bool,
        /// `host[:port]`, e.g. `ghcr.io`, `docker.io` or `127.0.0.1:5000`
        registry: String,
    },
    /// Remove a registry's saved credentials from every file den reads
    Logout {
        /// `host[:port]`, as given to `den login`
        registry: String,
    },
    /// Re-resolve the project's registry tags and rewrite den.lock
    Update {
        /// Containers to update (default: all)
        containers: Vec<String>,
    },
    /// List the images in the store
    Images,
    /// Remove images from the store (their layers go at the next `den gc`)
    Rmi {
        /// `name:tag`, an `oci:` source, or an ID prefix (see `den images`)
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unused images, layers and leftovers from the store
    Gc {
        /// Only report what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

/// Options of the commands that start a container.
#[derive(Args, Debug)]
struct LaunchArgs {
    /// Pass descriptors 3 to 3+N-1 on to the command (den closes every other one)
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// The network, instead of den.yaml's (default: slirp)
    #[arg(long, value_enum)]
    network: Option<NetworkArg>,
    /// Publish a port: `[host address:]host port:container port[/udp]`, e.g. `8080:80` (repeatable; with slirp)
    #[arg(long = "publish", short = 'p', value_name = "PORT")]
    ports: Vec<crate::net::PortSpec>,
}

impl LaunchArgs {
    fn choice(self) -> crate::launch::NetChoice {
        crate::launch::NetChoice {
            network: self.network.map(Network::from),
            ports: self.ports,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum NetworkArg {
    /// A network namespace of its own, reaching out through den's user-mode stack
    Slirp,
    /// Share the host's network
    Host,
    /// Only a loopback interface
    None,
}

impl From<NetworkArg> for Network {
    fn from(arg: NetworkArg) -> Network {
        match arg {
            NetworkArg::Slirp => Network::Slirp,
            NetworkArg::Host => Network::Host,
            NetworkArg::None => Network::None,
        }
    }
}

/// Runs den and returns the process exit code: the command's own status,
/// or 125 when den itself fails (as Docker and Podman do).
pub fn main() -> i32 {
    let cli = Cli::parse();
    let ctx = &Context::new(Env::read());
    let result = match cli.command.unwrap_or(Command::List) {
        Command::Run { net, command, args } => {
            let fds = net.preserve_fds;
            commands::run::execute(ctx, &command, args, net.choice(), fds)
        }
        Command::Exec {
            net,
            container,
            argv,
        } => {
            let fds = net.preserve_fds;
            commands::exec::execute(ctx, &container, argv, net.choice(), fds)
        }
        Command::Shell { net, container } => {
            let fds = net.preserve_fds;
            commands::shell::execute(ctx, container.as_deref(), net.choice(), fds)
        }
        Command::List => commands::list::execute(),
        Command::Build { force, containers } => commands::build::execute(ctx, &containers, force),
        Command::Pull {
            platform,
            quiet,
            reference,
        } => commands::pull::execute(ctx, &reference, platform.as_deref(), quiet),
        Command::Login {
            username,
            password_stdin,
            registry,
        } => commands::login::execute(ctx, &registry, username.as_deref(), password_stdin),
        Command::Logout { registry } => commands::logout::execute(&registry),
        Command::Update { containers } => commands::update::execute(ctx, &containers),
        Command::Images => commands::images::execute(ctx),
        Command::Rmi { images } => commands::rmi::execute(ctx, &images),
        Command::Gc { dry_run } => commands::gc::execute(ctx, dry_run),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("den: {err:#}");
            crate::userns::EXIT_DEN_FAILED
        }
    }
}
