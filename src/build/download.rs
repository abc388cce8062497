//! `download:` files, fetched by den on the host (with the proxy and
//! trust rules of registry pulls) into the user's cache, by sha256:
//! a file is fetched once for every project, and checked before use.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use crate::config::step::Download;
use crate::context::Context;
use crate::image::digest::to_hex;
use crate::image::lock::TempEntry;

const ATTEMPTS: u32 = 3;

/// The verified file, fetching it if the cache lacks it.
pub fn fetch(ctx: &Context, download: &Download) -> Result<PathBuf> {
    let agent = crate::image::registry::download_agent(&download.url, &ctx.env.proxies)?;
    let dir = ctx.cache()?.downloads()?;
    let hint = "den.yaml expects";
    fetch_verified(
        &agent,
        &download.url,
        &download.sha256,
        &dir.join(&download.sha256),
        hint,
    )
    .map_err(|err| match err.downcast_ref::<Mismatch>() {
        Some(_) => err.context("if the file changed on purpose, update `sha256`"),
        None => err,
    })
}

/// `url`'s body at `path`, unless `path` already exists: fetched into a
/// temporary file beside it, and renamed there only if its SHA-256 is
/// `sha256` (which `expected_by` names in the mismatch message). Retries
/// failed transfers, not mismatches.
pub fn fetch_verified(
    agent: &ureq::Agent,
    url: &str,
    sha256: &str,
    path: &Path,
    expected_by: &str,
) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let tmp = path.parent().unwrap_or(Path::new(".")).join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match fetch_once(agent, url, sha256, &tmp, expected_by) {
            Ok(temp) => {
                temp.persist(path)?;
                return Ok(path.to_path_buf());
            }
            // A wrong checksum will not get better by retrying.
            Err(err) if err.downcast_ref::<Mismatch>().is_some() => return Err(err),
            Err(err) => {
                if attempt < ATTEMPTS {
                    eprintln!("den: download of {url} failed ({err:#}); retrying");
                    std::thread::sleep(std::time::Duration::from_secs(u64::from(attempt)));
                }
                last = Some(err);
            }
        }
    }
    Err(last.expect("at least one attempt")).with_context(|| format!("cannot download {url}"))
}

#[derive(Debug, thiserror::Error)]
#[error("{url} has sha256 {found}, but {expected_by} {expected}")]
pub struct Mismatch {
    url: String,
    found: String,
    expected: String,
    expected_by: String,
}

fn fetch_once(
    agent: &ureq::Agent,
    url: &str,
    sha256: &str,
    tmp: &Path,
    expected_by: &str,
) -> Result<TempEntry> {
    let response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
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
    if found != sha256 {
        return Err(Mismatch {
            url: url.to_string(),
            found,
            expected: sha256.to_string(),
            expected_by: expected_by.to_string(),
        }
        .into());
    }
    Ok(temp)
}
