//! den: rootless, daemonless developer containers.
//!
//! The rooms: `config` reads den.yaml, `image` owns the store and turns
//! image sources into unpacked layers, `userns` builds and runs the
//! container, `commands` holds one file per subcommand, `cli` parses
//! arguments and dispatches.

pub mod base;
pub mod build;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod image;
pub mod launch;
pub mod net;
pub mod sys;
pub mod userns;
