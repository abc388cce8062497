//! den: rootless, daemonless developer containers.
//!
//! The rooms, each with one job, from the command line down (a room uses
//! only those below it):
//! - `cli`: parses arguments, makes the `context`, calls a command;
//! - `commands`: one file per subcommand, thin, calling the rooms below;
//! - `launch`: a den.yaml command or container to a runtime `Spec`;
//! - `build`: `setup:` steps and bootstraps, layer by layer, cached;
//! - `base`: which image a container starts from, and den.lock;
//! - `context`: den's environment variables, store, cache and settings;
//! - `config`: den.yaml (and den's settings file): read and checked;
//! - `image`: the store, registries, layouts, unpacking layers;
//! - `userns`: the runtime: namespaces, root filesystem, pid 1, the wall;
//! - `net`: the user-mode network stack (it uses nothing else of den but `sys`);
//! - `sys`: the syscalls rustix does not wrap.

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
