//! Checking the YAML tree against the den.yaml schema (version 1) and
//! building the `Config`. Every check stops at the first mistake and places
//! it at the offending key, or at the value when the value is what's wrong.

use std::fmt::Display;
use std::path::Path;

use indexmap::IndexMap;

use super::error::{Issue, Pos, with_hint};
use super::suggest::did_you_mean;
use super::yaml::{Node, Value};
use super::{Base, Command, Config, Container, FILE_NAME, Network, Run, User};
use crate::image::Source;

const TOP_KEYS: &[&str] = &["version", "containers", "commands"];
mod bootstrap;
mod confinement;
mod steps;

const CONTAINER_KEYS: &[&str] = &[
    "from",
    "bootstrap",
    "setup",
    "environ",
    "workdir",
    "user",
    "network",
    "host-loopback",
    "host-ca",
    "caps",
    "cap-drop",
    "seccomp",
    "limits",
];
const COMMAND_KEYS: &[&str] = &[
    "container",
    "run",
    "description",
    "environ",
    "network",
    "ports",
    "accepts-arguments",
];

/// Keys other tools use for the same setting; edit distance can't find these.
const CONTAINER_ALIASES: &[(&str, &str)] = &[
    ("image", "from"),
    ("cwd", "workdir"),
    ("working_dir", "workdir"),
    ("uid", "user"),
    ("steps", "setup"),
    ("build", "setup"),
    ("cap-add", "caps"),
    ("capabilities", "caps"),
    ("security-opt", "seccomp"),
    ("resources", "limits"),
];
const COMMAND_ALIASES: &[(&str, &str)] = &[
    ("cmd", "run"),
    ("command", "run"),
    ("script", "run"),
    ("args", "accepts-arguments"),
    ("arguments", "accepts-arguments"),
    ("help", "description"),
    ("publish", "ports"),
    ("expose", "ports"),
];

const CONTAINERS_EXPECTED: &str =
    "at least one container, e.g. `containers: {dev: {from: \"oci:./image\"}}`";
const SOURCE_EXPECTED: &str = "an image such as `debian:bookworm`, `oci:./image` or \
     `oci-archive:./image.tar`, or `container:<name>` to build on another container";
const ENV_VALUE_EXPECTED: &str = "a string, number or boolean (`\"\"` for an empty value)";

/// The whole file: `root` is its document, `None` when it has none.
pub(super) fn config(root: Option<&Node>, src: &str, base: &Path) -> Result<Config, Issue> {
    let doc = Doc { src, base };
    let root = match root {
        Some(node) if !matches!(node.value, Value::Null) => node,
        _ => {
            return Err(Issue::new(
                Pos::START,
                "the file is empty",
                CONTAINERS_EXPECTED,
            ));
        }
    };
    let top = doc.table(root, FILE_NAME, TOP_KEYS, &[])?;
    if let Some(version) = top.get("version") {
        doc.version(version)?;
    }
    let Some(containers) = top.get("containers") else {
        return Err(Issue::new(
            root.referenced,
            "no `containers` defined",
            CONTAINERS_EXPECTED,
        ));
    };
    let containers = doc.containers(containers)?;
    check_bases(&containers)?;
    let commands = match top.get("commands") {
        Some(commands) => doc.commands(commands, &containers)?,
        None => IndexMap::new(),
    };
    Ok(Config {
        containers,
        commands,
    })
}

/// One `key: value` of a map, the key as text.
struct Entry<'n> {
    key: String,
    key_at: Pos,
    node: &'n Node,
}

impl Entry<'_> {
    fn value(&self) -> &Value {
        &self.node.value
    }

    /// Where a problem with the value is shown: at the value, or at the
    /// key when there is no value to point at.
    fn at(&self) -> Pos {
        match self.value() {
            Value::Null => self.key_at,
            _ => self.node.referenced.into(),
        }
    }
}

/// A map with a fixed set of known keys, such as a container's settings.
struct Table<'n>(Vec<Entry<'n>>);

impl<'n> Table<'n> {
    fn get(&self, key: &str) -> Option<&Entry<'n>> {
        self.0.iter().find(|entry| entry.key == key)
    }

    /// `key`'s value read by `read`, or `None` when the key is absent.
    fn read<T>(
        &self,
        key: &str,
        read: impl FnOnce(&Entry<'n>) -> Result<T, Issue>,
    ) -> Result<Option<T>, Issue> {
        self.get(key).map(read).transpose()
    }
}

/// The file being checked: its text (to quote numbers as written) and
/// the directory relative image paths start from.
struct Doc<'a> {
    src: &'a str,
    base: &'a Path,
}

impl Doc<'_> {
    fn version(&self, entry: &Entry) -> Result<(), Issue> {
        match entry.value() {
            Value::Int(1) => Ok(()),
            _ => Err(Issue::new(
                entry.at(),
                format!("unsupported `version` {}", self.describe(entry.node)),
                "`1`, the only version so far",
            )),
        }
    }

    fn containers(&self, entry: &Entry) -> Result<IndexMap<String, Container>, Issue> {
        let containers = self.entries(entry.node, "`containers`", CONTAINERS_EXPECTED)?;
        if containers.is_empty() {
            return Err(Issue::new(
                entry.key_at,
                "`containers` is empty",
                CONTAINERS_EXPECTED,
            ));
        }
        containers
            .iter()
            .map(|container| Ok((name(container, "container")?, self.container(container)?)))
            .collect()
    }

    fn container(&self, entry: &Entry) -> Result<Container, Issue> {
        let what = format!("container `{}`", entry.key);
        let table = self.table(entry.node, &what, CONTAINER_KEYS, CONTAINER_ALIASES)?;
        let (from, from_at) = self.base(entry, &table, &what)?;
        Ok(Container {
            from,
            from_at: (from_at.line, from_at.column),
            setup: table
                .read("setup", |setup| self.setup(setup, &what))?
                .unwrap_or_default(),
            host_ca: table
                .read("host-ca", |flag| self.flag(flag, &what))?
                .unwrap_or(true),
            network: table
                .read("network", |net| self.network(net, &what))?
                .unwrap_or_default(),
            host_loopback: table
                .read("host-loopback", |flag| self.flag(flag, &what))?
                .unwrap_or(false),
            environ: table
                .read("environ", |env| self.environ(env, &what))?
                .unwrap_or_default(),
            workdir: table.read("workdir", |dir| self.workdir(dir, &what))?,
            user: table
                .read("user", |user| self.user(user, &what))?
                .unwrap_or_default(),
            confinement: self.confinement(&table, &what)?,
        })
    }

    /// `from:` or `bootstrap:`, exactly one of them.
    fn base(&self, entry: &Entry, table: &Table, what: &str) -> Result<(Base, Pos), Issue> {
        let (from, bootstrap) = (table.get("from"), table.get("bootstrap"));
        match (from, bootstrap) {
            (Some(_), Some(bootstrap)) => Err(Issue::new(
                bootstrap.key_at,
                format!("{what} has both `from` and `bootstrap`"),
                "one of them: `from:` starts from an image, `bootstrap:` makes one \
                 from a distribution's archive",
            )),
            (None, Some(bootstrap)) => Ok((
                Base::Bootstrap(self.bootstrap(bootstrap, what)?),
                bootstrap.at(),
            )),
            (Some(from), None) => {
                let source = self.text(from, what, SOURCE_EXPECTED)?;
                let at = from.at();
                let base = match source.strip_prefix("container:") {
                    Some(name) => Base::Container(name.to_string()),
                    None => Base::Image(
                        Source::parse(&source, self.base).map_err(|err| Issue::text(at, err))?,
                    ),
                };
                Ok((base, at))
            }
            (None, None) => Err(missing(
                entry,
                what,
                "from",
                &format!(
                    "`from:` with {SOURCE_EXPECTED}; or `bootstrap:` with {}",
                    bootstrap::EXPECTED
                ),
            )),
        }
    }

    fn workdir(&self, entry: &Entry, owner: &str) -> Result<String, Issue> {
        const EXPECTED: &str = "an absolute path inside the container, such as `/work`";
        let dir = self.text(entry, owner, EXPECTED)?;
        if !dir.starts_with('/') {
            let what = format!("`workdir` in {owner} is `{dir}`, a relative path");
            return Err(Issue::new(entry.at(), what, EXPECTED));
        }
        Ok(dir)
    }

    /// `1000` or `"1000"` (gid = uid), or `"1000:100"`. Names are not looked
    /// up: that would mean reading the image's /etc/passwd on every run.
    fn user(&self, entry: &Entry, owner: &str) -> Result<User, Issue> {
        let user = match entry.value() {
            Value::Int(uid) => u32::try_from(*uid).ok().map(|uid| User { uid, gid: uid }),
            Value::Str(text) => parse_user(text),
            _ => None,
        };
        user.ok_or_else(|| {
            Issue::new(
                entry.at(),
                format!("`user` in {owner} is {}", self.describe(entry.node)),
                "a numeric uid such as `1000`, or uid:gid such as `\"1000:100\"` \
                 (user names are not supported)",
            )
        })
    }

    fn commands(
        &self,
        entry: &Entry,
        containers: &IndexMap<String, Container>,
    ) -> Result<IndexMap<String, Command>, Issue> {
        let expected = "a map from command names to commands";
        self.entries(entry.node, "`commands`", expected)?
            .iter()
            .map(|command| {
                Ok((
                    name(command, "command")?,
                    self.command(command, containers)?,
                ))
            })
            .collect()
    }

    fn command(
        &self,
        entry: &Entry,
        containers: &IndexMap<String, Container>,
    ) -> Result<Command, Issue> {
        let what = format!("command `{}`", entry.key);
        let table = self.table(entry.node, &what, COMMAND_KEYS, COMMAND_ALIASES)?;
        let container = table.get("container").ok_or_else(|| {
            missing(
                entry,
                &what,
                "container",
                &format!("`container:` with {}", choices(containers.keys())),
            )
        })?;
        let run = table.get("run").ok_or_else(|| {
            missing(
                entry,
                &what,
                "run",
                "`run:` with a shell command or a list of arguments",
            )
        })?;
        let command = Command {
            container: self.container_ref(container, &what, containers)?,
            run: self.run(run, &what)?,
            description: table.read("description", |text| self.text(text, &what, "a string"))?,
            environ: table
                .read("environ", |env| self.environ(env, &what))?
                .unwrap_or_default(),
            network: table.read("network", |net| self.network(net, &what))?,
            ports: table
                .read("ports", |ports| self.ports(ports, &what))?
                .unwrap_or_default(),
            accepts_arguments: table
                .read("accepts-arguments", |flag| self.flag(flag, &what))?
                .unwrap_or(true),
        };
        let network = command
            .network
            .unwrap_or(containers[&command.container].network);
        if let Some(ports) = table.get("ports")
            && !command.ports.is_empty()
            && network != Network::Slirp
        {
            let what = format!("{what} publishes `ports` with `network: {network}`");
            let expected =
                "`network: slirp` (with `host`, the command's ports are the host's already)";
            return Err(Issue::new(ports.key_at, what, expected));
        }
        Ok(command)
    }

    fn container_ref(
        &self,
        entry: &Entry,
        owner: &str,
        containers: &IndexMap<String, Container>,
    ) -> Result<String, Issue> {
        let expected = choices(containers.keys());
        let name = self.text(entry, owner, &expected)?;
        if containers.contains_key(&name) {
            return Ok(name);
        }
        let hint = did_you_mean(&name, containers.keys().map(String::as_str), &[]);
        let what = with_hint(format!("unknown container `{name}` in {owner}"), hint);
        Err(Issue::new(entry.at(), what, expected))
    }

    fn run(&self, entry: &Entry, owner: &str) -> Result<Run, Issue> {
        const EXPECTED: &str = "a shell command, or a list of a program and its arguments";
        match entry.value() {
            Value::Seq(items) if items.is_empty() => Err(Issue::new(
                entry.at(),
                format!("`run` in {owner} is an empty list"),
                "a program and its arguments, such as `[cargo, build]`",
            )),
            Value::Seq(items) => items
                .iter()
                .map(|item| self.argument(item, owner))
                .collect::<Result<_, _>>()
                .map(Run::Argv),
            _ => match self.text(entry, owner, EXPECTED)? {
                script if script.trim().is_empty() => Err(Issue::new(
                    entry.at(),
                    format!("`run` in {owner} is blank"),
                    EXPECTED,
                )),
                script => Ok(Run::Shell(script)),
            },
        }
    }

    fn argument(&self, item: &Node, owner: &str) -> Result<String, Issue> {
        self.scalar(item).ok_or_else(|| {
            let what = format!("an argument in `run` of {owner} is {}", item.value.kind());
            Issue::new(item.referenced, what, "a string")
        })
    }

    fn network(&self, entry: &Entry, owner: &str) -> Result<Network, Issue> {
        const EXPECTED: &str = "`slirp` (its own network, reaching out through den), \
                                `host` (share the host's network) or `none` (loopback only)";
        match self.text(entry, owner, EXPECTED)?.as_str() {
            "slirp" => Ok(Network::Slirp),
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other => {
                let hint = did_you_mean(other, ["slirp", "host", "none"], &[]);
                let what = with_hint(format!("unknown network `{other}` in {owner}"), hint);
                Err(Issue::new(entry.at(), what, EXPECTED))
            }
        }
    }

    /// `ports: ["8080:80", "127.0.0.1:5432:5432", "5353:53/udp"]`.
    fn ports(&self, entry: &Entry, owner: &str) -> Result<Vec<crate::net::PortSpec>, Issue> {
        const EXPECTED: &str = "a list of `[host address:]host port:container port[/tcp|/udp]`, \
                                such as `[\"8080:80\", \"5353:53/udp\"]`";
        let Value::Seq(items) = entry.value() else {
            let what = format!("`ports` in {owner} is {}", entry.value().kind());
            return Err(Issue::new(entry.at(), what, EXPECTED));
        };
        items
            .iter()
            .map(|item| {
                let text = self.scalar(item).ok_or_else(|| {
                    let what = format!("an entry of `ports` in {owner} is {}", item.value.kind());
                    Issue::new(item.referenced, what, EXPECTED)
                })?;
                text.parse()
                    .map_err(|err: anyhow::Error| Issue::new(item.referenced, err, EXPECTED))
            })
            .collect()
    }

    fn flag(&self, entry: &Entry, owner: &str) -> Result<bool, Issue> {
        match entry.value() {
            Value::Bool(flag) => Ok(*flag),
            _ => Err(Issue::new(
                entry.at(),
                format!(
                    "`{}` in {owner} is {}",
                    entry.key,
                    self.describe(entry.node)
                ),
                "`true` or `false`",
            )),
        }
    }

    /// An `environ` map; numbers and booleans become their text.
    fn environ(&self, entry: &Entry, owner: &str) -> Result<IndexMap<String, String>, Issue> {
        let what = format!("`environ` in {owner}");
        let expected = "a map from variable names to values, such as `{DEBUG: 1}`";
        self.entries(entry.node, &what, expected)?
            .iter()
            .map(|var| {
                if var.key.is_empty() || var.key.contains(['=', '\0']) {
                    let bad = format!("invalid environment variable name `{}` in {what}", var.key);
                    return Err(Issue::new(var.key_at, bad, "a non-empty name without `=`"));
                }
                Ok((var.key.clone(), self.text(var, &what, ENV_VALUE_EXPECTED)?))
            })
            .collect()
    }

    /// A map that only allows `keys`; an unknown key gets a did-you-mean.
    fn table<'n>(
        &self,
        node: &'n Node,
        what: &str,
        keys: &[&'static str],
        aliases: &[(&str, &'static str)],
    ) -> Result<Table<'n>, Issue> {
        let entries = self.entries(node, what, &format!("a map with keys among {}", list(keys)))?;
        if let Some(unknown) = entries
            .iter()
            .find(|entry| !keys.contains(&entry.key.as_str()))
        {
            let hint = did_you_mean(&unknown.key, keys.iter().copied(), aliases);
            let what = with_hint(format!("unknown key `{}` in {what}", unknown.key), hint);
            return Err(Issue::new(unknown.key_at, what, choices(keys)));
        }
        Ok(Table(entries))
    }

    /// The entries of a map in file order. Nothing (`key:` alone) counts
    /// as an empty map; keys must be scalars and appear once.
    fn entries<'n>(
        &self,
        node: &'n Node,
        what: &str,
        expected: &str,
    ) -> Result<Vec<Entry<'n>>, Issue> {
        let pairs = match &node.value {
            Value::Map(pairs) => pairs,
            Value::Null => return Ok(Vec::new()),
            other => {
                return Err(Issue::new(
                    node.referenced,
                    format!("{what} is {}", other.kind()),
                    expected,
                ));
            }
        };
        let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let text = self.scalar(key).ok_or_else(|| {
                Issue::new(
                    key.referenced,
                    format!("a key in {what} is {}", key.value.kind()),
                    "a plain name",
                )
            })?;
            let key_at = Pos::from(key.referenced);
            if let Some(first) = entries.iter().find(|entry| entry.key == text) {
                let Pos { line, column } = first.key_at;
                let what = format!(
                    "duplicate key `{text}` in {what}, first at line {line}, column {column}"
                );
                return Err(Issue::new(key_at, what, "each key at most once"));
            }
            entries.push(Entry {
                key: text,
                key_at,
                node: value,
            });
        }
        Ok(entries)
    }

    /// A scalar value as text; `owner` and `expected` word the error.
    fn text(&self, entry: &Entry, owner: &str, expected: &str) -> Result<String, Issue> {
        self.scalar(entry.node).ok_or_else(|| {
            let what = format!("`{}` in {owner} is {}", entry.key, entry.value().kind());
            Issue::new(entry.at(), what, expected)
        })
    }

    /// Strings as they are; numbers and booleans as written, so
    /// `VERSION: 1.10` stays `1.10` rather than becoming `1.1`.
    fn scalar(&self, node: &Node) -> Option<String> {
        let value = match &node.value {
            Value::Str(text) => return Some(text.clone()),
            Value::Bool(flag) => flag.to_string(),
            Value::Int(number) => number.to_string(),
            Value::Float(number) => number.to_string(),
            Value::Null | Value::Seq(_) | Value::Map(_) => return None,
        };
        // `defined`: for an alias, the anchored scalar's own text.
        let span = node.defined.span();
        let written = span
            .byte_offset()
            .zip(span.byte_len())
            .and_then(|(start, len)| {
                self.src
                    .get(usize::try_from(start).ok()?..usize::try_from(start + len).ok()?)
            });
        Some(written.map_or(value, str::to_string))
    }

    /// A value for messages: scalars quoted as written, others by kind.
    fn describe(&self, node: &Node) -> String {
        match self.scalar(node) {
            Some(text) => format!("`{text}`"),
            None => node.value.kind().to_string(),
        }
    }
}

/// Every `from: container:<name>` names another container of the file,
/// and following them never loops.
fn check_bases(containers: &IndexMap<String, Container>) -> Result<(), Issue> {
    for (name, container) in containers {
        let Base::Container(base) = &container.from else {
            continue;
        };
        let at = Pos {
            line: container.from_at.0,
            column: container.from_at.1,
        };
        if !containers.contains_key(base) {
            let others = containers.keys().filter(|other| *other != name);
            let hint = did_you_mean(base, others.clone().map(String::as_str), &[]);
            let what = with_hint(
                format!("unknown container `{base}` in `from` of container `{name}`"),
                hint,
            );
            return Err(Issue::new(
                at,
                what,
                format!("`container:` followed by {}", choices(others)),
            ));
        }
        let mut chain = vec![name.as_str()];
        let mut next = base.as_str();
        while let Some(Base::Container(after)) = containers.get(next).map(|c| &c.from) {
            chain.push(next);
            if chain.contains(&after.as_str()) {
                chain.push(after);
                let what = format!(
                    "containers build on each other in a loop: {}",
                    chain.join(" → ")
                );
                return Err(Issue::new(
                    at,
                    what,
                    "a chain of `from: container:` that ends at an image",
                ));
            }
            next = after;
        }
    }
    Ok(())
}

/// A container or command name: it is typed on the command line and used
/// in paths, so it is kept to a safe set of characters.
fn name(entry: &Entry, kind: &str) -> Result<String, Issue> {
    let name = &entry.key;
    let valid = !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Issue::new(
            entry.key_at,
            format!("invalid {kind} name `{name}`"),
            "letters, digits, `-`, `_` and `.`, not starting with `-` or `.`",
        ));
    }
    Ok(name.clone())
}

fn missing(entry: &Entry, owner: &str, key: &str, expected: &str) -> Issue {
    Issue::new(entry.key_at, format!("{owner} has no `{key}`"), expected)
}

fn parse_user(text: &str) -> Option<User> {
    let (uid, gid) = text.split_once(':').unwrap_or((text, text));
    Some(User {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
    })
}

/// "`a`, `b` or `c`".
fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|item| format!("`{item}`")).collect();
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => items.concat(),
    }
}

/// "one of `a` or `b`", or just "`a`" when there is no choice.
fn choices<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<T> = items.into_iter().collect();
    match items.len() {
        1 => list(items),
        _ => format!("one of {}", list(items)),
    }
}
