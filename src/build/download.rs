//! `download:` files, fetched by den on the host (with the proxy and
//! trust rules of registry pulls) into the user's cache, by sha256:
//! a file is fetched once for every project, and checked before use.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::host::cache_dir;
use crate::config::step::Download;
use crate::image::digest::to_hex;
use crate::image::lock::TempEntry;

const ATTEMPTS: u32 = 3;

/// The verified file, fetching it if the cache lacks it.
pub fn fetch(download: &Download) -> Result<PathBuf> {
    let dir = cache_dir("downloads/sha256")?;
    let path = dir.join(&download.sha256);
    if path.is_file() {
        return Ok(path);
    }
    let tmp = cache_dir("downloads/tmp")?;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match fetch_once(download, &tmp) {
            Ok(temp) => {
                temp.persist(&path)?;
                return Ok(path);
            }
            // A wrong checksum will not get better by retrying.
            Err(err) if err.downcast_ref::<Mismatch>().is_some() => return Err(err),
            Err(err) => {
                if attempt < ATTEMPTS {
                    eprintln!(
                        "den: download of {} failed ({err:#}); retrying",
                        download.url
                    );
                    std::thread::sleep(std::time::Duration::from_secs(u64::from(attempt)));
                }
                last = Some(err);
            }
        }
    }
    Err(last.expect("at least one attempt"))
        .with_context(|| format!("cannot download {}", download.url))
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{url} has sha256 {found}, but den.yaml expects {expected}; if the file changed on purpose, update `sha256`"
)]
struct Mismatch {
    url: String,
    found: String,
    expected: String,
}

fn fetch_once(download: &Download, tmp: &std::path::Path) -> Result<TempEntry> {
    let agent = crate::image::registry::download_agent(&download.url)?;
    let response = agent
        .get(&download.url)
        .call()
        .with_context(|| format!("cannot fetch {}", download.url))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{} answered {status}", download.url);
    }
    let mut body = response.into_body().into_reader();
    let mut temp = TempEntry::file(tmp, "download")?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let count = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("reading the download"),
        };
        hasher.update(&buffer[..count]);
        temp.handle()
            .write_all(&buffer[..count])
            .context("writing the download to den's cache")?;
    }
    let found = to_hex(&hasher.finalize());
    if found != download.sha256 {
        return Err(Mismatch {
            url: download.url.clone(),
            found,
            expected: download.sha256.clone(),
        }
        .into());
    }
    Ok(temp)
}
