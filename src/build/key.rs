//! Cache keys. A step's key covers its parent's key, what the step does
//! (its serialized `StepKind`, never its place in den.yaml) and the
//! content of the files it reads, so a key names one layer's content.

use crate::config::{Step, StepKind};
use crate::image::digest::Digest;

/// Bumped whenever den changes what a step builds (the recipes, the
/// seccomp filter, capture): old layers then stop matching.
const VERSION: &str = "den-build/1";

/// The key below the first step: the base image and the directory steps
/// run in.
pub fn base(image_id: &str, workdir: Option<&str>) -> Digest {
    let text = format!(
        "{VERSION}\0image:{image_id}\0workdir:{}",
        workdir.unwrap_or("/")
    );
    Digest::of(text.as_bytes())
}

pub fn step(parent: &Digest, kind: &StepKind, inputs: &[u8]) -> Digest {
    let mut bytes = format!("{VERSION}\0{}\0", parent.hex()).into_bytes();
    bytes.extend(serde_json::to_vec(kind).expect("steps serialize"));
    bytes.push(0);
    bytes.extend_from_slice(inputs);
    Digest::of(&bytes)
}

/// A hash of a container's steps and workdir, for the no-op check:
/// equal hashes mean den.yaml asks for the same build.
pub fn steps(steps: &[Step], workdir: Option<&str>) -> String {
    let kinds: Vec<&StepKind> = steps.iter().map(|step| &step.kind).collect();
    let mut bytes = format!("{VERSION}\0{}\0", workdir.unwrap_or("/")).into_bytes();
    bytes.extend(serde_json::to_vec(&kinds).expect("steps serialize"));
    Digest::of(&bytes).hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_and_differ_by_step_and_inputs() {
        let base = base("sha256:abc", None);
        let run = StepKind::Run("make".into());
        let first = step(&base, &run, b"");
        assert_eq!(first, step(&base, &run, b""));
        assert_ne!(first, step(&base, &run, b"x"));
        assert_ne!(first, step(&base, &StepKind::Run("make all".into()), b""));
        assert_ne!(first, step(&super::base("sha256:abd", None), &run, b""));
        assert_ne!(base, super::base("sha256:abc", Some("/app")));
    }
}
