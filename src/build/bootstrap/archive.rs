//! The package archive, trusted only as far as its signature reaches:
//! InRelease is checked against the archive keys, each Packages index
//! against InRelease's SHA-256, each .deb against its index.
//!
//! Indexes and .debs are cached by SHA-256 in the user's cache dir, each
//! written to a temporary file and renamed once verified, so an
//! interrupted bootstrap keeps what it had and never a partial file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::release::{self, Release};
use super::resolve::{Index, Package};
use super::{Target, pgp};
use crate::build::download::fetch_verified;
use crate::context::{Cache, Context};
use crate::image::digest::Digest;
use crate::image::parallel;
use crate::image::progress::human_size;

/// Parallel .deb transfers: enough to hide a mirror's latency.
const FETCHERS: usize = 6;

/// One suite of the archive, its InRelease verified.
pub struct Archive<'t> {
    target: &'t Target,
    agent: ureq::Agent,
    cache: Cache,
    pub release: Release,
    /// `sha256:` of the InRelease file.
    pub inrelease: String,
}

impl<'t> Archive<'t> {
    /// Fetches and verifies `dists/<suite>/InRelease`.
    pub fn open(target: &'t Target, ctx: &Context) -> Result<Archive<'t>> {
        let agent = crate::image::registry::download_agent(&target.mirror, &ctx.env.proxies)?;
        let url = format!("{}/dists/{}/InRelease", target.mirror, target.suite);
        let bytes = get(&agent, &url)?;
        let inrelease = Digest::of(&bytes).to_string();
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{url} is not text; is `mirror` a Debian archive?"))?;
        let keyring = target.keyring()?;
        let body = pgp::verify_cleartext(&keyring, &text).with_context(|| {
            format!("{url} failed its signature check; den trusts nothing from this mirror")
        })?;
        let release =
            release::parse(&body).with_context(|| format!("{url} is not a valid Release file"))?;
        Ok(Archive {
            target,
            agent,
            cache: ctx.cache()?,
            release,
            inrelease,
        })
    }

    /// Every component's Packages index for the target's architecture.
    pub fn index(&self) -> Result<Index> {
        let mut index = Index::new();
        for component in &self.target.components {
            let text = self.packages(component)?;
            index
                .add(&text, &self.target.arch)
                .with_context(|| format!("in the Packages index of `{component}`"))?;
        }
        Ok(index)
    }

    /// One component's Packages text: the compressed file is fetched (by
    /// hash where the archive offers it), checked, and cached.
    fn packages(&self, component: &str) -> Result<String> {
        let dir = format!("{component}/binary-{}", self.target.arch);
        let (name, hash) = ["Packages.xz", "Packages.gz"]
            .iter()
            .find_map(|name| {
                let hash = self.release.file(&format!("{dir}/{name}"))?;
                Some((*name, hash))
            })
            .with_context(|| {
                format!(
                    "InRelease of `{}` lists no {dir}/Packages.xz or .gz: does the suite have \
                     component `{component}` for `{}`?",
                    self.target.suite, self.target.arch
                )
            })?;
        let base = format!("{}/dists/{}/{dir}", self.target.mirror, self.target.suite);
        let url = match self.release.acquire_by_hash {
            true => format!("{base}/by-hash/SHA256/{}", hash.sha256),
            false => format!("{base}/{name}"),
        };
        let cache = self.cache.bootstrap_indexes()?.join(&hash.sha256);
        let path = fetch_verified(&self.agent, &url, &hash.sha256, &cache, "InRelease says")?;
        let file = std::fs::File::open(&path)?;
        let mut reader: Box<dyn Read> = match name.ends_with(".xz") {
            true => Box::new(liblzma::read::XzDecoder::new(std::io::BufReader::new(file))),
            false => Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file))),
        };
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .with_context(|| format!("cannot decompress {url}"))?;
        Ok(text)
    }

    /// The packages' .deb files, fetched in parallel where not cached.
    pub fn fetch(&self, packages: &[&Package], label: &str) -> Result<Vec<PathBuf>> {
        let dir = self.cache.bootstrap_debs()?;
        let paths: Vec<PathBuf> = packages
            .iter()
            .map(|package| dir.join(format!("{}.deb", package.sha256)))
            .collect();
        let missing: Vec<usize> = (0..packages.len())
            .filter(|&at| !paths[at].is_file())
            .collect();
        if missing.is_empty() {
            return Ok(paths);
        }
        let bytes: u64 = missing.iter().map(|&at| packages[at].size).sum();
        eprintln!(
            "den: {label}: fetching {} of {} packages ({})",
            missing.len(),
            packages.len(),
            human_size(bytes)
        );
        let started = Instant::now();
        parallel::try_map(&missing, FETCHERS, |&at| {
            self.fetch_one(packages[at], &paths[at], label)
        })?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "den: {label}: fetched {} in {seconds:.1} s",
            human_size(bytes)
        );
        Ok(paths)
    }

    fn fetch_one(&self, package: &Package, path: &Path, label: &str) -> Result<()> {
        let url = format!("{}/{}", self.target.mirror, package.filename);
        fetch_verified(
            &self.agent,
            &url,
            &package.sha256,
            path,
            "the Packages index says",
        )
        .with_context(|| format!("{label}: package {} {}", package.name, package.version))?;
        Ok(())
    }
}

/// A small file's bytes (InRelease).
fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?;
    let status = response.status();
    if status == 404 {
        bail!(
            "{url} is not there (404): is the suite's name right, and `mirror` the archive's root?"
        );
    }
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .with_context(|| format!("cannot read {url}"))
}
