//! Argument parsing and dispatch; each subcommand lives in `commands/`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "den", version, about = "Rootless, daemonless developer containers")]
pub struct Cli {}

/// Runs den and returns the process exit code.
pub fn main() -> i32 {
    let _cli = Cli::parse();
    0
}
