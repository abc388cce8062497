//! den's one syscall seam: the calls rustix does not wrap, each behind a
//! small safe function, so `unsafe` lives here and nowhere in the logic
//! of `userns` and `net`, which use nothing lower. Free functions rather
//! than a trait: a call costs what the syscall costs, and what a caller
//! does stays visible where it does it; logic worth testing without
//! namespaces is kept in pure functions beside it.

pub mod mount;
pub mod netif;
pub mod process;
pub mod seccomp;
pub mod signal;
