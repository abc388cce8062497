//! Unpacking a .deb's files on the host, so that the new system has a
//! shell, libc and dpkg before dpkg runs in it.
//!
//! A .deb is an `ar` archive: `debian-binary`, `control.tar.*`, then
//! `data.tar[.xz|.zst|.gz]`. Only the data member is read here; dpkg
//! unpacks every package again in the container and sets owners then, so
//! owners are not kept and set-id bits are dropped.
//!
//! Paths resolve inside the new root as they would in a chroot
//! (`RESOLVE_IN_ROOT`), so the merged-/usr links (`bin → usr/bin`) are
//! followed and no entry can reach outside it, whatever links the
//! packages hold.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: usize = 60;

/// Unpacks `deb`'s data member into the directory `root`; returns how
/// many entries it placed.
pub fn unpack(deb: &Path, root: BorrowedFd<'_>) -> Result<u64> {
    let file = File::open(deb).with_context(|| format!("cannot open `{}`", deb.display()))?;
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let (name, size) = data_member(&mut reader)
        .with_context(|| format!("`{}` is not a Debian package", deb.display()))?;
    let member = reader.take(size);
    let tar: Box<dyn Read> = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("xz") => Box::new(liblzma::read::XzDecoder::new(member)),
        Some("zst") => Box::new(zstd::Decoder::with_buffer(BufReader::new(member))?),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(member)),
        Some("tar") => Box::new(member),
        _ => bail!("`{}` has an unknown data member `{name}`", deb.display()),
    };
    unpack_tar(tar, root).with_context(|| format!("cannot unpack `{}`", deb.display()))
}

/// Skips to the `data.tar*` member; returns its name and size.
fn data_member(reader: &mut impl Read) -> Result<(String, u64)> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != AR_MAGIC {
        bail!("no ar archive header");
    }
    loop {
        let mut header = [0u8; AR_HEADER];
        reader
            .read_exact(&mut header)
            .context("no data.tar member")?;
        if &header[58..60] != b"`\n" {
            bail!("a damaged ar member header");
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .context("a damaged ar member size")?;
        if name.starts_with("data.tar") {
            return Ok((name, size));
        }
        // Members start at even offsets.
        let skip = size + size % 2;
        io::copy(&mut reader.take(skip), &mut io::sink())?;
    }
}

fn unpack_tar(tar: impl Read, root: BorrowedFd<'_>) -> Result<u64> {
    let mut archive = tar::Archive::new(tar);
    let mut placed = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(rel) = relative(&path)? else {
            continue;
        };
        place(&mut entry, root, &rel)
            .with_context(|| format!("at `/{}`", crate::image::shown_path(&rel)))?;
        placed += 1;
    }
    Ok(placed)
}

/// `./usr/bin/x` → `usr/bin/x`; `./` → `None`; `..` is refused.
fn relative(path: &Path) -> Result<Option<PathBuf>> {
    let rel = crate::image::clean_path(path)
        .with_context(|| format!("the package holds `{}`", crate::image::shown_path(path)))?;
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

fn place<R: Read>(entry: &mut tar::Entry<R>, root: BorrowedFd<'_>, rel: &Path) -> Result<()> {
    let header = entry.header();
    // Owners are dpkg's to set later; set-id bits would only be dropped.
    let mode = Mode::from_raw_mode(header.mode()? & 0o777);
    let kind = header.entry_type();
    let (parent, name) = parent_of(root, rel)?;
    match kind {
        tar::EntryType::Directory => make_dir(parent.as_fd(), name, mode),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_unless_dir(parent.as_fd(), name)?;
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(parent.as_fd(), name, flags, mode)?;
            let mut file = File::from(fd);
            io::copy(entry, &mut file)?;
            // The umask may have taken bits.
            rustix::fs::fchmod(&file, mode)?;
            Ok(())
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name()?.context("a symlink without a target")?;
            remove_unless_dir(parent.as_fd(), name)?;
            match rustix::fs::symlinkat(target.as_os_str(), parent.as_fd(), name) {
                // A directory stands there already: dpkg sorts that out.
                Err(Errno::EXIST) => Ok(()),
                other => Ok(other?),
            }
        }
        tar::EntryType::Link => {
            let target = entry.link_name()?.context("a hard link without a target")?;
            let target = relative(&target)?.context("a hard link to the root")?;
            let (target_parent, target_name) = parent_of(root, &target)?;
            remove_unless_dir(parent.as_fd(), name)?;
            rustix::fs::linkat(
                target_parent.as_fd(),
                target_name,
                parent.as_fd(),
                name,
                AtFlags::empty(),
            )?;
            Ok(())
        }
        // Devices and fifos: none in a base system, and dpkg makes them.
        _ => Ok(()),
    }
}

/// The directory holding `rel` (made if missing) and `rel`'s last name.
fn parent_of<'p>(root: BorrowedFd<'_>, rel: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
    let name = rel.file_name().context("an empty path")?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = match open_in_root(root, parent) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => {
            make_dirs(root, parent)?;
            open_in_root(root, parent)?
        }
        Err(err) => return Err(err.into()),
    };
    Ok((dir, name))
}

fn open_in_root(root: BorrowedFd<'_>, rel: &Path) -> rustix::io::Result<OwnedFd> {
    let rel = match rel.as_os_str().is_empty() {
        true => Path::new("."),
        false => rel,
    };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// `mkdir -p` inside the root, one component at a time.
fn make_dirs(root: BorrowedFd<'_>, rel: &Path) -> Result<()> {
    let mut done = PathBuf::new();
    for part in rel.components() {
        let dir = open_in_root(root, &done)?;
        make_dir(dir.as_fd(), part.as_os_str(), Mode::from_raw_mode(0o755))?;
        done.push(part);
    }
    Ok(())
}

fn make_dir(parent: BorrowedFd<'_>, name: &OsStr, mode: Mode) -> Result<()> {
    match rustix::fs::mkdirat(parent, name, mode) {
        Ok(()) => Ok(rustix::fs::chmodat(parent, name, mode, AtFlags::empty())?),
        // Shared by many packages, or a link to one (merged /usr).
        Err(Errno::EXIST) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Clears the way for a file, link or symlink; a directory stays.
fn remove_unless_dir(parent: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) | Err(Errno::ISDIR) => Ok(()),
        Err(err) => Err(anyhow::anyhow!(
            "cannot replace `{}`: {err}",
            String::from_utf8_lossy(name.as_bytes())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                format!("{name}/"),
                0,
                0,
                0,
                "100644",
                data.len()
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn add(builder: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, body: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o4755
        });
        header.set_size(body.len() as u64);
        // Paths with `..` can't go through set_path; write the name bytes.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, body).unwrap();
    }

    fn root_with_merged_usr() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).unwrap();
        let fd = rustix::fs::open(dir.path(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        (dir, fd)
    }

    #[test]
    fn unpacks_through_merged_usr_links_and_drops_setid_bits() {
        let data = tar_of(|b| {
            add(b, "./", tar::EntryType::Directory, b"");
            add(b, "./bin/", tar::EntryType::Directory, b"");
            add(b, "./bin/sh", tar::EntryType::Regular, b"#!shell");
            add(b, "./etc/a/b.conf", tar::EntryType::Regular, b"x=1");
        });
        let mut compressed = Vec::new();
        let mut encoder =
            flate2::write::GzEncoder::new(&mut compressed, flate2::Compression::fast());
        io::Write::write_all(&mut encoder, &data).unwrap();
        encoder.finish().unwrap();
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"ignored"),
            ("data.tar.gz", &compressed),
        ]);
        let (dir, root) = root_with_merged_usr();
        let deb_path = dir.path().join("p.deb");
        std::fs::write(&deb_path, deb).unwrap();
        // `./` itself is not an entry to place.
        assert_eq!(unpack(&deb_path, root.as_fd()).unwrap(), 3);
        let sh = dir.path().join("usr/bin/sh");
        assert_eq!(std::fs::read(&sh).unwrap(), b"#!shell");
        let mode = std::os::unix::fs::PermissionsExt::mode(&sh.metadata().unwrap().permissions());
        assert_eq!(mode & 0o7777, 0o755);
        assert!(dir.path().join("bin").is_symlink(), "the link stays a link");
        assert_eq!(
            std::fs::read(dir.path().join("etc/a/b.conf")).unwrap(),
            b"x=1"
        );
    }

    #[test]
    fn nothing_escapes_the_root() {
        let (dir, root) = root_with_merged_usr();
        let outside = tempfile::tempdir().unwrap();
        let link = outside.path().to_str().unwrap().to_string();
        let data = tar_of(|b| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            header.set_path("./escape").unwrap();
            header.set_link_name(&link).unwrap();
            header.set_cksum();
            b.append(&header, &[][..]).unwrap();
            add(b, "./escape/planted", tar::EntryType::Regular, b"x");
        });
        // The absolute link resolves inside the root, as in a chroot.
        std::fs::create_dir_all(dir.path().join(link.trim_start_matches('/'))).unwrap();
        unpack_tar(&data[..], root.as_fd()).unwrap();
        assert!(!outside.path().join("planted").exists());
        assert!(
            dir.path()
                .join(link.trim_start_matches('/'))
                .join("planted")
                .exists()
        );

        let dotdot = tar_of(|b| add(b, "./../evil", tar::EntryType::Regular, b"x"));
        let err = unpack_tar(&dotdot[..], root.as_fd()).unwrap_err();
        assert!(format!("{err:#}").contains("`..`"), "{err:#}");
    }

    #[test]
    fn not_a_deb_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.deb");
        std::fs::write(&path, b"hello").unwrap();
        let root = rustix::fs::open(dir.path(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        let err = unpack(&path, root.as_fd()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a Debian package"),
            "{err:#}"
        );
    }
}
