//! Checking a container's confinement keys: `caps`, `cap-drop`,
//! `seccomp` and `limits`.

use super::{Doc, Entry, Issue, Table, Value, did_you_mean, with_hint};
use crate::userns::{Capabilities, Confinement, Limits, Size, caps};

const CAPS_EXPECTED: &str = "a list of capability names as capabilities(7) spells them, \
                             such as `[SYS_PTRACE, NET_RAW]`, or `[ALL]`";
const SECCOMP_EXPECTED: &str =
    "`default` (den's profile) or `unconfined` (no seccomp filter; see docs/runtime.md)";
const LIMIT_KEYS: &[&str] = &["root", "tmp", "shm", "run-den", "pids"];
const LIMIT_ALIASES: &[(&str, &str)] = &[
    ("rootfs", "root"),
    ("upper", "root"),
    ("tmpfs", "tmp"),
    ("dev-shm", "shm"),
    ("shm-size", "shm"),
    ("pids-limit", "pids"),
    ("processes", "pids"),
    ("nproc", "pids"),
];
const SIZE_EXPECTED: &str = "a size such as `512M`, `2G` or `1.5G` (powers of 1024), \
                             a byte count, or a share of the machine's memory such as `25%`";
const PIDS_EXPECTED: &str = "a number of processes and threads, at least 16, such as `4096`";

impl Doc<'_> {
    /// The confinement a container's commands and builds run under: den's
    /// defaults, loosened or tightened by the container's keys.
    pub(super) fn confinement(&self, table: &Table, owner: &str) -> Result<Confinement, Issue> {
        let mut confinement = Confinement::default();
        if let Some(added) = table.read("caps", |list| self.capabilities(list, owner))? {
            confinement.caps |= added;
        }
        if let Some(dropped) = table.read("cap-drop", |list| self.capabilities(list, owner))? {
            confinement.caps &= !dropped;
        }
        if let Some(seccomp) = table.read("seccomp", |mode| self.seccomp(mode, owner))? {
            confinement.seccomp = seccomp;
        }
        if let Some(limits) = table.read("limits", |limits| self.limits(limits, owner))? {
            confinement.limits = limits;
        }
        Ok(confinement)
    }

    fn capabilities(&self, entry: &Entry, owner: &str) -> Result<Capabilities, Issue> {
        let what = format!("`{}` in {owner}", entry.key);
        let Value::Seq(items) = entry.value() else {
            let what = format!("{what} is {}", self.describe(entry.node));
            return Err(Issue::new(entry.at(), what, CAPS_EXPECTED));
        };
        items.iter().try_fold(Capabilities::empty(), |set, item| {
            let name = self.scalar(item).ok_or_else(|| {
                let what = format!("an entry of {what} is {}", item.value.kind());
                Issue::new(item.referenced, what, CAPS_EXPECTED)
            })?;
            let cap = caps::by_name(&name).ok_or_else(|| {
                let bare = name.to_ascii_uppercase();
                let bare = bare.strip_prefix("CAP_").unwrap_or(&bare).to_string();
                let hint = did_you_mean(&bare, caps::names(), &[]);
                let what = with_hint(format!("unknown capability `{name}` in {what}"), hint);
                Issue::new(item.referenced, what, CAPS_EXPECTED)
            })?;
            Ok(set | cap)
        })
    }

    fn seccomp(&self, entry: &Entry, owner: &str) -> Result<bool, Issue> {
        match self.text(entry, owner, SECCOMP_EXPECTED)?.as_str() {
            "default" => Ok(true),
            "unconfined" => Ok(false),
            other => {
                let hint = did_you_mean(other, ["default", "unconfined"], &[]);
                let what = with_hint(format!("unknown `seccomp` mode `{other}` in {owner}"), hint);
                Err(Issue::new(entry.at(), what, SECCOMP_EXPECTED))
            }
        }
    }

    fn limits(&self, entry: &Entry, owner: &str) -> Result<Limits, Issue> {
        let owner = format!("`limits` of {owner}");
        let table = self.table(entry.node, &owner, LIMIT_KEYS, LIMIT_ALIASES)?;
        let defaults = Limits::default();
        let size = |key: &str, default: Size| -> Result<Size, Issue> {
            Ok(table
                .read(key, |size| self.size(size, &owner))?
                .unwrap_or(default))
        };
        Ok(Limits {
            root: size("root", defaults.root)?,
            tmp: size("tmp", defaults.tmp)?,
            shm: size("shm", defaults.shm)?,
            run_den: size("run-den", defaults.run_den)?,
            pids: table
                .read("pids", |pids| self.pids(pids, &owner))?
                .unwrap_or(defaults.pids),
        })
    }

    fn size(&self, entry: &Entry, owner: &str) -> Result<Size, Issue> {
        let text = self.text(entry, owner, SIZE_EXPECTED)?;
        parse_size(&text).ok_or_else(|| {
            let what = format!("`{}` in {owner} is `{text}`", entry.key);
            Issue::new(entry.at(), what, SIZE_EXPECTED)
        })
    }

    fn pids(&self, entry: &Entry, owner: &str) -> Result<u64, Issue> {
        match entry.value() {
            Value::Int(count) if *count >= 16 => Ok(*count as u64),
            _ => {
                let what = format!("`pids` in {owner} is {}", self.describe(entry.node));
                Err(Issue::new(entry.at(), what, PIDS_EXPECTED))
            }
        }
    }
}

/// `512M`, `1.5G`, `64KiB`, `1048576` or `25%` (of memory, 1 to 100).
fn parse_size(text: &str) -> Option<Size> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        return percent
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|percent| (1..=100).contains(percent))
            .map(Size::PercentOfMemory);
    }
    crate::config::parse_bytes(text)
        .filter(|&bytes| bytes > 0)
        .map(Size::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_tmpfs_takes_them() {
        assert_eq!(parse_size("512M"), Some(Size::Bytes(512 << 20)));
        assert_eq!(parse_size("1.5G"), Some(Size::Bytes(3 << 29)));
        assert_eq!(parse_size("25%"), Some(Size::PercentOfMemory(25)));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("150%"), None);
        assert_eq!(parse_size("lots"), None);
    }
}
