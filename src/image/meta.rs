//! The per-layer metadata file (`layers/<diff-id hex>/meta`): what the
//! rootless unpack could not keep on disk, for a later export.
//!
//! Unpacked files belong to the user who unpacked them and lose
//! setuid/setgid bits, so the original owner and mode of every entry is
//! written here, one line per entry in tar order (later lines win):
//!
//! ```text
//! # den layer metadata v1: <type> <mode> <uid>:<gid> <path>
//! d 0755 0:0 usr/bin
//! f 4755 0:0 usr/bin/passwd
//! l 0777 0:0 bin
//! c:1:3 0666 0:0 dev/null
//! i 0755 0:0 opt/tool
//! f 0755 0:0 opt/tool/run
//! # implicit directories: 1
//! ```
//!
//! Types: `f` file, `d` directory, `i` implicit parent directory (not in
//! the tar, created 0755), `l` symlink, `h` hard link, `w` whiteout (path
//! is the hidden name), `o` opaque directory, `c:<major>:<minor>` /
//! `b:<major>:<minor>` / `p` device and fifo entries that were skipped.
//! Mode is octal with setuid/setgid/sticky bits. The path is relative to
//! the layer root; `\` is written `\\` and control bytes `\xHH`.
//!
//! The footer, the last line of a complete file, counts the `i` lines, so
//! that an import can tell with one small read that a layer has no
//! implicit directories to check (see `implicit`). Files written before it
//! existed have no footer; they read the same and are scanned instead.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use std::os::unix::ffi::OsStringExt;

pub const HEADER: &str = "# den layer metadata v1: <type> <mode> <uid>:<gid> <path>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    ImplicitDir,
    Symlink,
    HardLink,
    Whiteout,
    Opaque,
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub path: PathBuf,
}

pub fn write_header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{HEADER}")
}

/// The last line: how many `i` entries the file has.
pub const FOOTER: &str = "# implicit directories: ";

pub fn write_footer(out: &mut dyn Write, implicit_dirs: u64) -> io::Result<()> {
    writeln!(out, "{FOOTER}{implicit_dirs}")
}

/// The number of implicit directories the footer of `file` states; `None`
/// if it has no footer (written by an older den, or cut short).
pub fn read_footer(file: &File) -> io::Result<Option<u64>> {
    const TAIL: u64 = 64;
    let size = file.metadata()?.len();
    let start = size.saturating_sub(TAIL);
    let mut tail = vec![0; (size - start) as usize];
    file.read_exact_at(&mut tail, start)?;
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Ok(None);
    };
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(newline) => &body[newline + 1..],
        None if start == 0 => body,
        None => return Ok(None),
    };
    Ok(last
        .strip_prefix(FOOTER.as_bytes())
        .and_then(|count| std::str::from_utf8(count).ok())
        .and_then(|count| count.parse().ok()))
}

pub fn write_entry(out: &mut dyn Write, entry: &MetaEntry) -> io::Result<()> {
    let kind = match entry.kind {
        EntryKind::File => "f".to_string(),
        EntryKind::Dir => "d".to_string(),
        EntryKind::ImplicitDir => "i".to_string(),
        EntryKind::Symlink => "l".to_string(),
        EntryKind::HardLink => "h".to_string(),
        EntryKind::Whiteout => "w".to_string(),
        EntryKind::Opaque => "o".to_string(),
        EntryKind::CharDevice(major, minor) => format!("c:{major}:{minor}"),
        EntryKind::BlockDevice(major, minor) => format!("b:{major}:{minor}"),
        EntryKind::Fifo => "p".to_string(),
    };
    write!(
        out,
        "{kind} {:04o} {}:{} ",
        entry.mode, entry.uid, entry.gid
    )?;
    out.write_all(&escape(entry.path.as_os_str().as_encoded_bytes()))?;
    out.write_all(b"\n")
}

fn escape(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..0x20 | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

fn unescape(text: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match rest {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', hi, lo, tail @ ..] => {
                let hex = std::str::from_utf8(&[*hi, *lo])?.to_string();
                out.push(u8::from_str_radix(&hex, 16)?);
                rest = tail;
            }
            _ => bail!("bad escape in metadata path"),
        }
    }
    Ok(out)
}

/// Reads a metadata file back (for export and tests).
pub fn read(input: impl BufRead) -> anyhow::Result<Vec<MetaEntry>> {
    let mut entries = Vec::new();
    for (number, line) in input.split(b'\n').enumerate() {
        let line = line?;
        if line.starts_with(b"#") || line.is_empty() {
            continue;
        }
        entries.push(
            parse_line(&line).with_context(|| format!("layer metadata line {}", number + 1))?,
        );
    }
    Ok(entries)
}

fn parse_line(line: &[u8]) -> anyhow::Result<MetaEntry> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let (Some(kind), Some(mode), Some(owner), Some(path)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        bail!("expected `<type> <mode> <uid>:<gid> <path>`");
    };
    let (uid, gid) = std::str::from_utf8(owner)?
        .split_once(':')
        .context("owner is not uid:gid")?;
    Ok(MetaEntry {
        kind: parse_kind(std::str::from_utf8(kind)?)?,
        mode: u32::from_str_radix(std::str::from_utf8(mode)?, 8)?,
        uid: uid.parse()?,
        gid: gid.parse()?,
        path: PathBuf::from(std::ffi::OsString::from_vec(unescape(path)?)),
    })
}

fn parse_kind(text: &str) -> anyhow::Result<EntryKind> {
    let device = |rest: &str| -> anyhow::Result<(u32, u32)> {
        let (major, minor) = rest.split_once(':').context("device is not major:minor")?;
        Ok((major.parse()?, minor.parse()?))
    };
    Ok(match text {
        "f" => EntryKind::File,
        "d" => EntryKind::Dir,
        "i" => EntryKind::ImplicitDir,
        "l" => EntryKind::Symlink,
        "h" => EntryKind::HardLink,
        "w" => EntryKind::Whiteout,
        "o" => EntryKind::Opaque,
        "p" => EntryKind::Fifo,
        _ => match text.split_at_checked(2) {
            Some(("c:", rest)) => {
                let (major, minor) = device(rest)?;
                EntryKind::CharDevice(major, minor)
            }
            Some(("b:", rest)) => {
                let (major, minor) = device(rest)?;
                EntryKind::BlockDevice(major, minor)
            }
            _ => bail!("unknown entry type `{text}`"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_odd_paths() {
        let entries = vec![
            MetaEntry {
                kind: EntryKind::File,
                mode: 0o4755,
                uid: 0,
                gid: 0,
                path: "usr/bin/su do".into(),
            },
            MetaEntry {
                kind: EntryKind::CharDevice(1, 3),
                mode: 0o666,
                uid: 1000,
                gid: 5,
                path: PathBuf::from(std::ffi::OsString::from_vec(b"a\\b\nc\x01".to_vec())),
            },
        ];
        let mut out = Vec::new();
        write_header(&mut out).unwrap();
        for entry in &entries {
            write_entry(&mut out, entry).unwrap();
        }
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);
        assert_eq!(read(&out[..]).unwrap(), entries);
    }

    #[test]
    fn footer_is_read_from_the_end_and_optional() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let footer = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_footer(&File::open(&path).unwrap()).unwrap()
        };
        let mut out = Vec::new();
        write_header(&mut out).unwrap();
        for n in 0..20 {
            let entry = MetaEntry {
                kind: EntryKind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                path: format!("some/longer/path/{n}").into(),
            };
            write_entry(&mut out, &entry).unwrap();
        }
        let old = out.clone();
        write_footer(&mut out, 3).unwrap();
        assert_eq!(footer(&out), Some(3));
        assert_eq!(read(&out[..]).unwrap(), read(&old[..]).unwrap());
        assert_eq!(footer(&old), None, "no footer: an older den wrote it");
        assert_eq!(footer(&out[..out.len() - 1]), None, "cut short");
        assert_eq!(footer(b""), None);
        assert_eq!(footer(b"# implicit directories: 0\n"), Some(0));
        let mut odd = old.clone();
        odd.extend_from_slice(b"f 0644 0:0 x# implicit directories: 0\n");
        assert_eq!(footer(&odd), None);
    }
}
