//! Why init could not set the container up, as it tells den: the stage
//! (typed, so `diagnose` never depends on how a message is worded), the
//! errno when the kernel gave one, and the whole message for the user.

use std::fmt;

use anyhow::Error;

/// Where init was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Writing the user namespace's id maps.
    IdMaps = 1,
    /// Mounting the parts of the root filesystem (/proc, /sys, /dev,
    /// tmpfs, binds, masks).
    Mounts = 2,
    /// The overlay of the image's layers.
    Overlay = 3,
    /// pivot_root into the new root.
    PivotRoot = 4,
    /// The network: the TUN device, loopback, sysctls.
    Network = 5,
    /// Anything else: descriptors, the hostname, the terminal, the
    /// seccomp listener, starting the command.
    Other = 6,
}

impl Stage {
    fn from_code(code: u8) -> Stage {
        match code {
            1 => Stage::IdMaps,
            2 => Stage::Mounts,
            3 => Stage::Overlay,
            4 => Stage::PivotRoot,
            5 => Stage::Network,
            _ => Stage::Other,
        }
    }

    /// Whether the kernel, and so host policy, decides this step: a
    /// refusal here is a host restriction, not a file's permissions.
    pub fn is_kernel_setup(self) -> bool {
        matches!(
            self,
            Stage::IdMaps | Stage::Mounts | Stage::Overlay | Stage::PivotRoot
        )
    }
}

/// One failure of init's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    /// The errno of the innermost OS error, if any.
    pub errno: Option<i32>,
    /// The error with its context, for the user.
    pub message: String,
}

impl Failure {
    pub fn new(stage: Stage, err: &Error) -> Failure {
        Failure {
            stage,
            errno: errno_of(err),
            message: format!("{err:#}"),
        }
    }

    /// The wire form: stage, errno (0 for none, little-endian), message.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![self.stage as u8];
        bytes.extend_from_slice(&self.errno.unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(self.message.as_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Failure {
        let stage = Stage::from_code(bytes.first().copied().unwrap_or(u8::MAX));
        let errno = bytes
            .get(1..5)
            .and_then(|raw| raw.try_into().ok())
            .map(i32::from_le_bytes)
            .filter(|errno| *errno != 0);
        let message = String::from_utf8_lossy(bytes.get(5..).unwrap_or_default()).into_owned();
        Failure {
            stage,
            errno,
            message,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The errno of the first OS error in `err`'s chain.
fn errno_of(err: &Error) -> Option<i32> {
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .or_else(|| {
                cause
                    .downcast_ref::<rustix::io::Errno>()
                    .map(|errno| errno.raw_os_error())
            })
    })
}

/// Marks a step's error with its stage.
pub trait AtStage<T> {
    fn at(self, stage: Stage) -> Result<T, Failure>;
}

impl<T> AtStage<T> for anyhow::Result<T> {
    fn at(self, stage: Stage) -> Result<T, Failure> {
        self.map_err(|err| Failure::new(stage, &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn travels_intact() {
        let err = Err::<(), _>(std::io::Error::from_raw_os_error(libc::EPERM))
            .context("pivot_root into the container")
            .unwrap_err();
        let failure = Failure::new(Stage::PivotRoot, &err);
        assert_eq!(failure.errno, Some(libc::EPERM));
        assert_eq!(Failure::decode(&failure.encode()), failure);
    }

    #[test]
    fn errno_is_found_through_rustix_and_context() {
        let err = Err::<(), _>(rustix::io::Errno::ACCESS)
            .context("mounting /proc")
            .context("setting up")
            .unwrap_err();
        assert_eq!(errno_of(&err), Some(libc::EACCES));
        let plain = anyhow::anyhow!("no errno here");
        assert_eq!(Failure::new(Stage::Other, &plain).errno, None);
    }

    #[test]
    fn unknown_stages_read_as_other() {
        assert_eq!(Failure::decode(&[200, 0, 0, 0, 0]).stage, Stage::Other);
        assert_eq!(Failure::decode(&[]).message, "");
    }
}
