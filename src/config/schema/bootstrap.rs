//! Checking `bootstrap:`: `debian/<suite>`, or a map with the
//! distribution and where and what to fetch.

use super::{Doc, Entry, Issue, Value, did_you_mean, with_hint};
use crate::config::{Bootstrap, Distro, Variant};

pub(super) const EXPECTED: &str =
    "`debian/<suite>` or `ubuntu/<suite>`, such as `debian/bookworm` or `ubuntu/noble`";
const KEYS: &[&str] = &["distro", "mirror", "components", "variant", "keyring"];
const ALIASES: &[(&str, &str)] = &[
    ("suite", "distro"),
    ("release", "distro"),
    ("url", "mirror"),
    ("archive", "mirror"),
    ("keys", "keyring"),
];
const VARIANTS: &[&str] = &["minbase", "buildd"];

impl Doc<'_> {
    pub(super) fn bootstrap(&self, entry: &Entry, owner: &str) -> Result<Bootstrap, Issue> {
        let owner = format!("`bootstrap` of {owner}");
        if !matches!(entry.value(), Value::Map(_)) {
            let (distro, suite) = self.distro(entry, &owner)?;
            return Ok(Bootstrap {
                distro,
                suite,
                mirror: None,
                components: vec!["main".into()],
                variant: Variant::default(),
                keyring: None,
            });
        }
        let table = self.table(entry.node, &owner, KEYS, ALIASES)?;
        let distro_entry = self.required(&table, entry, &owner, "distro", EXPECTED)?;
        let (distro, suite) = self.distro(distro_entry, &owner)?;
        Ok(Bootstrap {
            distro,
            suite,
            mirror: table.read("mirror", |mirror| self.mirror(mirror, &owner))?,
            components: table
                .read("components", |list| {
                    self.words(list, &owner, "archive components")
                })?
                .unwrap_or_else(|| vec!["main".into()]),
            variant: table
                .read("variant", |variant| self.variant(variant, &owner))?
                .unwrap_or_default(),
            keyring: table.read("keyring", |path| {
                let text = self.text(path, &owner, "a key file's path")?;
                Ok(self.base.join(text))
            })?,
        })
    }

    fn distro(&self, entry: &Entry, owner: &str) -> Result<(Distro, String), Issue> {
        let text = self.text(entry, owner, EXPECTED)?;
        let (name, suite) = text.split_once('/').unwrap_or((&text, ""));
        let distro = match name {
            "debian" => Distro::Debian,
            "ubuntu" => Distro::Ubuntu,
            other => {
                let hint = did_you_mean(other, ["debian", "ubuntu"], &[]);
                let what = with_hint(format!("unknown distribution `{other}` in {owner}"), hint);
                return Err(Issue::new(entry.at(), what, EXPECTED));
            }
        };
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c);
        if suite.is_empty() || !suite.chars().all(valid) {
            let what = format!("`{text}` in {owner} names no suite");
            return Err(Issue::new(entry.at(), what, EXPECTED));
        }
        Ok((distro, suite.to_string()))
    }

    fn mirror(&self, entry: &Entry, owner: &str) -> Result<String, Issue> {
        const MIRROR: &str = "the archive's root URL, such as `http://deb.debian.org/debian` \
                              or a snapshot such as \
                              `http://snapshot.debian.org/archive/debian/20260711T000000Z`";
        let url = self.text(entry, owner, MIRROR)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let what = format!("`mirror` in {owner} is `{url}`");
            return Err(Issue::new(entry.at(), what, MIRROR));
        }
        Ok(url.trim_end_matches('/').to_string())
    }

    fn variant(&self, entry: &Entry, owner: &str) -> Result<Variant, Issue> {
        const VARIANT: &str = "`minbase` (essential and required packages with apt) or \
                               `buildd` (minbase with build-essential)";
        match self.text(entry, owner, VARIANT)?.as_str() {
            "minbase" => Ok(Variant::Minbase),
            "buildd" => Ok(Variant::Buildd),
            other => {
                let hint = did_you_mean(other, VARIANTS.iter().copied(), &[]);
                let what = with_hint(format!("unknown variant `{other}` in {owner}"), hint);
                Err(Issue::new(entry.at(), what, VARIANT))
            }
        }
    }
}
