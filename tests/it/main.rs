//! den's integration tests, in one binary: one module per area, all on
//! the shared `harness` (which runs the real `den` as an unprivileged
//! user). One binary compiles and links the harness once, and every
//! helper it keeps is used by some test.
//!
//! Run one area with `cargo nextest run -E 'test(/^runtime::/)'` or
//! `cargo test --test it runtime::`.

mod harness;

mod bootstrap;
mod build;
mod config_errors;
mod container_network;
mod escape;
mod gc;
mod image_import;
mod lockfile;
mod login;
mod malicious_layers;
mod network_stack;
mod pull_environment;
mod registry_pull;
mod runtime;
mod smoke;
