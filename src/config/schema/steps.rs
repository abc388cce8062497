//! Checking a container's `setup:` list: each item a one-key map naming
//! the step, its value that step's settings.

use std::path::{Component, Path, PathBuf};

use super::{Doc, Entry, Issue, Pos, Value, did_you_mean, list, with_hint};
use crate::config::step::{Copy, Download, Npm, Pip, Step, StepKind, Text};

const STEPS: &[&str] = &[
    "run", "install", "copy", "env", "download", "text", "pip", "npm",
];
/// What other tools call the same step.
const STEP_ALIASES: &[(&str, &str)] = &[
    ("sh", "run"),
    ("shell", "run"),
    ("script", "run"),
    ("packages", "install"),
    ("apt", "install"),
    ("apk", "install"),
    ("dnf", "install"),
    ("add", "copy"),
    ("environ", "env"),
    ("environment", "env"),
    ("fetch", "download"),
    ("file", "text"),
    ("write", "text"),
];
const STEP_EXPECTED: &str = "a one-key map such as `- run: make` or `- install: [git]`";
const CONTAINER_PATH: &str = "an absolute path inside the container, such as `/opt/tool`";
const PROJECT_PATH: &str = "a path relative to the project root (the directory of den.yaml)";
const MODE_EXPECTED: &str = "an octal mode such as `0755` or `\"644\"`";

impl Doc<'_> {
    pub(super) fn setup(&self, entry: &Entry, owner: &str) -> Result<Vec<Step>, Issue> {
        let what = format!("`setup` in {owner}");
        match entry.value() {
            Value::Null => Ok(Vec::new()),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.step(item, &format!("step {} of {what}", index + 1)))
                .collect(),
            other => Err(Issue::new(
                entry.at(),
                format!("{what} is {}", other.kind()),
                format!("a list of steps, each {STEP_EXPECTED}"),
            )),
        }
    }

    fn step(&self, node: &super::Node, what: &str) -> Result<Step, Issue> {
        let at = Pos::from(node.referenced);
        let entries = self.entries(node, what, STEP_EXPECTED)?;
        let [entry] = entries.as_slice() else {
            let found = match entries.len() {
                0 => "empty".to_string(),
                n => format!("a map with {n} keys"),
            };
            return Err(Issue::new(
                at,
                format!("{what} is {found}"),
                format!("{STEP_EXPECTED}; start each step with its own `-`"),
            ));
        };
        let owner = format!("the `{}` step", entry.key);
        let kind = match entry.key.as_str() {
            "run" => StepKind::Run(self.script(entry, &owner)?),
            "install" => StepKind::Install(self.words(entry, &owner, "package names")?),
            "copy" => StepKind::Copy(self.copy(entry, &owner)?),
            "env" => StepKind::Env(self.environ(entry, &owner)?),
            "download" => StepKind::Download(self.download(entry, &owner)?),
            "text" => StepKind::Text(self.text_file(entry, &owner)?),
            "pip" => StepKind::Pip(self.pip(entry, &owner)?),
            "npm" => StepKind::Npm(self.npm(entry, &owner)?),
            unknown => {
                let hint = did_you_mean(unknown, STEPS.iter().copied(), STEP_ALIASES);
                let message = with_hint(format!("unknown step `{unknown}` in {what}"), hint);
                return Err(Issue::new(entry.key_at, message, list(STEPS)));
            }
        };
        Ok(Step {
            kind,
            line: at.line,
            column: at.column,
        })
    }

    fn script(&self, entry: &Entry, owner: &str) -> Result<String, Issue> {
        const EXPECTED: &str = "a shell script (run with `/bin/sh -ec`)";
        let script = self.text(entry, owner, EXPECTED)?;
        if script.trim().is_empty() {
            return Err(Issue::new(
                entry.at(),
                format!("{owner} is blank"),
                EXPECTED,
            ));
        }
        Ok(script)
    }

    /// A non-empty list of words, or one word; `what` names them.
    pub(super) fn words(
        &self,
        entry: &Entry,
        owner: &str,
        what: &str,
    ) -> Result<Vec<String>, Issue> {
        let expected = format!("a list of {what}, such as `[git, curl]`");
        let items = match entry.value() {
            Value::Seq(items) => items
                .iter()
                .map(|item| {
                    self.scalar(item)
                        .filter(|word| !word.trim().is_empty())
                        .ok_or_else(|| {
                            let found = format!("an item of {owner} is {}", item.value.kind());
                            Issue::new(item.referenced, found, &expected)
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![self.text(entry, owner, &expected)?],
        };
        if items.is_empty() {
            return Err(Issue::new(
                entry.at(),
                format!("{owner} is empty"),
                expected,
            ));
        }
        if let Some(bad) = items.iter().find(|item| item.starts_with('-')) {
            let found = format!("`{bad}` in {owner} looks like an option");
            return Err(Issue::new(entry.at(), found, expected));
        }
        Ok(items)
    }

    fn copy(&self, entry: &Entry, owner: &str) -> Result<Copy, Issue> {
        let table = self.table(entry.node, owner, &["from", "to", "exclude"], &[])?;
        let from = self.required(&table, entry, owner, "from", PROJECT_PATH)?;
        let to = self.required(&table, entry, owner, "to", CONTAINER_PATH)?;
        Ok(Copy {
            from: self.project_path(from, owner)?,
            to: self.container_path(to, owner)?,
            exclude: table
                .read("exclude", |exclude| {
                    self.words(exclude, owner, "gitignore-style patterns")
                })?
                .unwrap_or_default(),
        })
    }

    fn download(&self, entry: &Entry, owner: &str) -> Result<Download, Issue> {
        let keys = &["url", "sha256", "to", "mode"];
        let table = self.table(entry.node, owner, keys, &[("hash", "sha256")])?;
        let url_entry = self.required(&table, entry, owner, "url", "an http or https URL")?;
        let url = self.text(url_entry, owner, "an http or https URL")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let found = format!("`url` in {owner} is `{url}`");
            return Err(Issue::new(url_entry.at(), found, "an http or https URL"));
        }
        const SHA_EXPECTED: &str = "the file's SHA-256 as 64 hex digits (required: \
                                    run `sha256sum` on a copy you trust)";
        let sha_entry = self.required(&table, entry, owner, "sha256", SHA_EXPECTED)?;
        let sha256 = self
            .text(sha_entry, owner, SHA_EXPECTED)?
            .to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found = format!("`sha256` in {owner} is `{sha256}`");
            return Err(Issue::new(sha_entry.at(), found, SHA_EXPECTED));
        }
        let to = self.required(&table, entry, owner, "to", CONTAINER_PATH)?;
        Ok(Download {
            url,
            sha256,
            to: self.container_file(to, owner)?,
            mode: self.mode(&table, owner, 0o644)?,
        })
    }

    fn text_file(&self, entry: &Entry, owner: &str) -> Result<Text, Issue> {
        let table = self.table(entry.node, owner, &["to", "content", "mode"], &[])?;
        let to = self.required(&table, entry, owner, "to", CONTAINER_PATH)?;
        let content = self.required(&table, entry, owner, "content", "the file's text")?;
        Ok(Text {
            to: self.container_file(to, owner)?,
            content: self.text(content, owner, "the file's text")?,
            mode: self.mode(&table, owner, 0o644)?,
        })
    }

    fn pip(&self, entry: &Entry, owner: &str) -> Result<Pip, Issue> {
        if !matches!(entry.value(), Value::Map(_)) {
            return Ok(Pip {
                packages: self.words(entry, owner, "Python package requirements")?,
                requirements: None,
                venv: None,
            });
        }
        let keys = &["packages", "requirements", "venv"];
        let table = self.table(entry.node, owner, keys, &[("virtualenv", "venv")])?;
        let packages = table
            .read("packages", |packages| {
                self.words(packages, owner, "Python package requirements")
            })?
            .unwrap_or_default();
        let requirements = table.read("requirements", |file| self.project_path(file, owner))?;
        if packages.is_empty() && requirements.is_none() {
            return Err(Issue::new(
                entry.at(),
                format!("{owner} installs nothing"),
                "`packages: [...]` or `requirements: requirements.txt`",
            ));
        }
        Ok(Pip {
            packages,
            requirements,
            venv: table.read("venv", |venv| self.container_path(venv, owner))?,
        })
    }

    fn npm(&self, entry: &Entry, owner: &str) -> Result<Npm, Issue> {
        if !matches!(entry.value(), Value::Map(_)) {
            return Ok(Npm {
                from: PathBuf::from("."),
                dir: self.container_path(entry, owner)?,
            });
        }
        let table = self.table(entry.node, owner, &["from", "dir"], &[])?;
        let dir = self.required(&table, entry, owner, "dir", CONTAINER_PATH)?;
        Ok(Npm {
            from: table
                .read("from", |from| self.project_path(from, owner))?
                .unwrap_or_else(|| PathBuf::from(".")),
            dir: self.container_path(dir, owner)?,
        })
    }

    pub(super) fn required<'t, 'n>(
        &self,
        table: &'t super::Table<'n>,
        entry: &Entry,
        owner: &str,
        key: &str,
        expected: &str,
    ) -> Result<&'t Entry<'n>, Issue> {
        table.get(key).ok_or_else(|| {
            Issue::new(
                entry.at(),
                format!("{owner} has no `{key}`"),
                format!("`{key}:` with {expected}"),
            )
        })
    }

    fn container_path(&self, entry: &Entry, owner: &str) -> Result<String, Issue> {
        let path = self.text(entry, owner, CONTAINER_PATH)?;
        let escapes = Path::new(&path)
            .components()
            .any(|part| part == Component::ParentDir);
        if !path.starts_with('/') || escapes {
            let found = format!("`{}` in {owner} is `{path}`", entry.key);
            return Err(Issue::new(
                entry.at(),
                found,
                format!("{CONTAINER_PATH}, without `..`"),
            ));
        }
        Ok(path)
    }

    /// A container path naming a file, not a directory.
    fn container_file(&self, entry: &Entry, owner: &str) -> Result<String, Issue> {
        let path = self.container_path(entry, owner)?;
        if path.ends_with('/') {
            let found = format!("`{}` in {owner} is `{path}`, a directory", entry.key);
            return Err(Issue::new(
                entry.at(),
                found,
                "the path of the file to write",
            ));
        }
        Ok(path)
    }

    fn project_path(&self, entry: &Entry, owner: &str) -> Result<PathBuf, Issue> {
        let text = self.text(entry, owner, PROJECT_PATH)?;
        let path = PathBuf::from(&text);
        let mut depth = 0i32;
        for part in path.components() {
            match part {
                Component::Normal(_) => depth += 1,
                Component::ParentDir => depth -= 1,
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => depth = -1,
            }
            if depth < 0 {
                let found = format!(
                    "`{}` in {owner} is `{text}`, outside the project",
                    entry.key
                );
                return Err(Issue::new(entry.at(), found, PROJECT_PATH));
            }
        }
        Ok(path)
    }

    fn mode(&self, table: &super::Table<'_>, owner: &str, default: u32) -> Result<u32, Issue> {
        let Some(entry) = table.get("mode") else {
            return Ok(default);
        };
        // YAML reads `0755` as the decimal number 755: use the text as written.
        let text = self.text(entry, owner, MODE_EXPECTED)?;
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 => Ok(mode),
            _ => Err(Issue::new(
                entry.at(),
                format!("`mode` in {owner} is `{text}`"),
                MODE_EXPECTED,
            )),
        }
    }
}
