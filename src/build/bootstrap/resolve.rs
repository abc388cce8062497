//! The bootstrap package set: which packages of a suite make a minimal
//! system, chosen as apt would, and the order dpkg installs them in.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use anyhow::{Context, Result, bail};

use super::{deb822, version};

/// One binary package of the index.
#[derive(Debug)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Relative to the mirror root (`pool/...`).
    pub filename: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub priority: String,
    pub essential: bool,
    /// Relation fields as written (checked by `Index::add`) and parsed
    /// again when needed: resolution looks at few of an index's packages.
    pre_depends: String,
    depends: String,
    conflicts: String,
    breaks: String,
    provides: Vec<Provide>,
}

/// Alternatives (`a | b`), at least one of which must be installed.
type Group<'a> = Vec<Relation<'a>>;

#[derive(Debug)]
struct Relation<'a> {
    name: &'a str,
    constraint: Option<(Op, &'a str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

#[derive(Debug)]
struct Provide {
    name: String,
    version: Option<String>,
}

/// Every package of one architecture (and `all`) from one or more
/// Packages files.
#[derive(Debug, Default)]
pub struct Index {
    /// The architecture of every `add` (set by the first).
    arch: String,
    packages: Vec<Package>,
    /// Name → packages of that name, highest version first.
    versions: HashMap<String, Vec<usize>>,
    /// Virtual name → packages that provide it.
    providers: HashMap<String, Vec<usize>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Minbase,
    Buildd,
}

/// Locked packages the index no longer has, as (name, version).
#[derive(Debug)]
pub struct MissingPackages {
    pub packages: Vec<(String, String)>,
}

impl std::error::Error for MissingPackages {}

impl fmt::Display for MissingPackages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        let count = self.packages.len();
        let noun = if count == 1 { "package" } else { "packages" };
        write!(f, "{count} locked {noun} not in the index: ")?;
        let shown: Vec<_> = self
            .packages
            .iter()
            .take(SHOWN)
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        write!(f, "{}", shown.join(", "))?;
        if count > SHOWN {
            write!(f, " and {} more", count - SHOWN)?;
        }
        Ok(())
    }
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds one Packages file's packages for `arch` (and `all`). A name may
    /// have several versions; the highest is the one resolution uses. The
    /// same name and version seen again (another suite) is kept once.
    pub fn add(&mut self, packages_text: &str, arch: &str) -> Result<()> {
        if self.arch.is_empty() {
            self.arch = arch.to_owned();
        } else if self.arch != arch {
            bail!(
                "cannot add {arch} packages to an index of {} packages",
                self.arch
            );
        }
        for (number, paragraph) in deb822::paragraphs(packages_text).enumerate() {
            let Some(name) = paragraph.get("Package") else {
                bail!("Packages stanza {} has no Package field", number + 1);
            };
            if let Some(package) = parse_package(&paragraph, name, arch)
                .with_context(|| format!("Packages: package `{name}`"))?
            {
                self.insert(package);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    fn insert(&mut self, package: Package) {
        let id = self.packages.len();
        let versions = match self.versions.get_mut(&package.name) {
            Some(versions) => versions,
            None => self.versions.entry(package.name.clone()).or_default(),
        };
        let packages = &self.packages;
        if versions
            .iter()
            .any(|&other| packages[other].version == package.version)
        {
            return;
        }
        let at = versions
            .iter()
            .position(|&other| version::compare(&packages[other].version, &package.version).is_lt())
            .unwrap_or(versions.len());
        versions.insert(at, id);
        for provide in &package.provides {
            self.providers
                .entry(provide.name.clone())
                .or_default()
                .push(id);
        }
        self.packages.push(package);
    }

    /// The version of `name` resolution uses: the highest.
    fn candidate(&self, name: &str) -> Option<usize> {
        self.versions.get(name).and_then(|ids| ids.first().copied())
    }

    fn exact(&self, name: &str, version: &str) -> Option<usize> {
        let ids = self.versions.get(name)?;
        ids.iter()
            .copied()
            .find(|&id| self.packages[id].version == version)
    }

    /// Whether `id` is the candidate of its name (other versions of a name
    /// provide nothing, as in apt).
    fn is_candidate(&self, id: usize) -> bool {
        self.candidate(&self.packages[id].name) == Some(id)
    }
}

fn parse_package(paragraph: &deb822::Paragraph, name: &str, arch: &str) -> Result<Option<Package>> {
    let field = |field: &str| {
        paragraph
            .get(field)
            .with_context(|| format!("no {field} field"))
    };
    let architecture = field("Architecture")?;
    if architecture != arch && architecture != "all" {
        return Ok(None);
    }
    let size = field("Size")?;
    let sha256 = field("SHA256")?;
    if sha256.len() != 64 || !sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("bad SHA256 {sha256:?}");
    }
    // Checked now so a bad field is reported with its package; kept as text.
    let relations = |field: &str| -> Result<&str> {
        let text = paragraph.get(field).unwrap_or_default();
        check_relations(text, arch).with_context(|| format!("bad {field} {text:?}"))?;
        Ok(text)
    };
    let provides = groups(relations("Provides")?, arch).flatten();
    Ok(Some(Package {
        name: name.to_owned(),
        version: field("Version")?.to_owned(),
        architecture: architecture.to_owned(),
        filename: field("Filename")?.to_owned(),
        size: size.parse().with_context(|| format!("bad Size {size:?}"))?,
        sha256: sha256.to_ascii_lowercase(),
        priority: paragraph.get("Priority").unwrap_or_default().to_owned(),
        essential: paragraph
            .get("Essential")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        pre_depends: relations("Pre-Depends")?.to_owned(),
        depends: relations("Depends")?.to_owned(),
        conflicts: relations("Conflicts")?.to_owned(),
        breaks: relations("Breaks")?.to_owned(),
        provides: provides.map(Provide::from).collect(),
    }))
}

fn check_relations(text: &str, arch: &str) -> Result<()> {
    for group in text.split(',').filter(|g| !g.trim_ascii().is_empty()) {
        for alternative in group.split('|') {
            parse_relation(alternative, arch)?;
        }
    }
    Ok(())
}

/// `a (>= 1) | b, c` (already checked): groups of alternatives.
/// Alternatives restricted to other architectures are dropped, and so is a
/// group left empty.
fn groups<'a>(text: &'a str, arch: &'a str) -> impl Iterator<Item = Group<'a>> {
    text.split(',')
        .filter(|g| !g.trim_ascii().is_empty())
        .filter_map(move |group| {
            let alternatives: Group = group
                .split('|')
                .filter_map(|relation| parse_relation(relation, arch).ok().flatten())
                .collect();
            (!alternatives.is_empty()).then_some(alternatives)
        })
}

/// `name[:archqual] [(op version)] [[arch list]] [<profiles>]`; `None`
/// when the arch list excludes `arch`.
fn parse_relation<'a>(text: &'a str, arch: &str) -> Result<Option<Relation<'a>>> {
    let text = text.trim_ascii();
    let end = text
        .bytes()
        .position(|c| c.is_ascii_whitespace() || matches!(c, b'(' | b'[' | b'<'))
        .unwrap_or(text.len());
    let (name, mut rest) = text.split_at(end);
    // Single-architecture installs: `:any` and `:native` change nothing.
    let name = name.split(':').next().unwrap_or_default();
    if name.is_empty() {
        bail!("relation {text:?} has no package name");
    }
    let mut constraint = None;
    let mut for_arch = true;
    loop {
        rest = rest.trim_ascii_start();
        let Some(open) = rest.chars().next() else {
            break;
        };
        let close = match open {
            '(' => ')',
            '[' => ']',
            '<' => '>',
            _ => bail!("unexpected {rest:?} in relation {text:?}"),
        };
        let end = rest
            .find(close)
            .with_context(|| format!("unclosed {open:?} in relation {text:?}"))?;
        let inner = &rest[1..end];
        rest = &rest[end + 1..];
        match open {
            '(' => {
                constraint =
                    Some(parse_constraint(inner).with_context(|| format!("in relation {text:?}"))?)
            }
            '[' => for_arch = arch_list_includes(inner, arch),
            // Build profiles only appear in build dependencies.
            _ => {}
        }
    }
    Ok(for_arch.then_some(Relation { name, constraint }))
}

fn parse_constraint(text: &str) -> Result<(Op, &str)> {
    let text = text.trim_ascii();
    let split = text
        .find(|c| !matches!(c, '<' | '>' | '='))
        .unwrap_or(text.len());
    let (op, version) = (&text[..split], text[split..].trim_ascii());
    let op = match op {
        "<<" => Op::Lt,
        // `<` and `>` are obsolete spellings of `<=` and `>=`.
        "<=" | "<" => Op::Le,
        "=" => Op::Eq,
        ">=" | ">" => Op::Ge,
        ">>" => Op::Gt,
        _ => bail!("unknown version operator {op:?}"),
    };
    if version.is_empty() {
        bail!("no version after {op}");
    }
    Ok((op, version))
}

/// `[amd64 arm64]` includes only those, `[!i386]` excludes.
fn arch_list_includes(list: &str, arch: &str) -> bool {
    let negated = list.trim_start().starts_with('!');
    let hit = list.split_whitespace().any(|word| {
        let word = word.trim_start_matches('!');
        word == arch
            || word == "any"
            || word == "linux-any"
            || word.strip_prefix("any-") == Some(arch)
            || word.strip_prefix("linux-") == Some(arch)
    });
    hit != negated
}

impl From<Relation<'_>> for Provide {
    /// Only `=` versions a provide; anything else (invalid) provides the
    /// name unversioned rather than rejecting the whole index.
    fn from(relation: Relation<'_>) -> Provide {
        let version = match relation.constraint {
            Some((Op::Eq, version)) => Some(version.to_owned()),
            _ => None,
        };
        Provide {
            name: relation.name.to_owned(),
            version,
        }
    }
}

impl Op {
    fn holds(self, order: Ordering) -> bool {
        match self {
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::Eq => order.is_eq(),
            Op::Ge => order.is_ge(),
            Op::Gt => order.is_gt(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        })
    }
}

impl Relation<'_> {
    fn allows(&self, version: &str) -> bool {
        match self.constraint {
            None => true,
            Some((op, wanted)) => op.holds(version::compare(version, wanted)),
        }
    }

    /// Satisfied by `package` itself, not through its provides.
    fn is_met_by(&self, package: &Package) -> bool {
        package.name == self.name && self.allows(&package.version)
    }

    /// Satisfied through one of `package`'s provides: a versioned relation
    /// needs a versioned provide.
    fn is_provided_by(&self, package: &Package) -> bool {
        package.provides.iter().any(|provide| {
            provide.name == self.name
                && match (&self.constraint, &provide.version) {
                    (None, _) => true,
                    (Some(_), Some(version)) => self.allows(version),
                    (Some(_), None) => false,
                }
        })
    }
}

impl fmt::Display for Relation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.constraint {
            None => write!(f, "{}", self.name),
            Some((op, version)) => write!(f, "{} ({op} {version})", self.name),
        }
    }
}

impl Package {
    /// Pre-Depends then Depends groups, with the field each came from.
    fn dependencies<'s>(
        &'s self,
        arch: &'s str,
    ) -> impl Iterator<Item = (&'static str, Group<'s>)> {
        let pre = groups(&self.pre_depends, arch).map(|g| ("Pre-Depends", g));
        pre.chain(groups(&self.depends, arch).map(|g| ("Depends", g)))
    }

    /// Conflicts then Breaks, with the field each came from.
    fn conflicts<'s>(
        &'s self,
        arch: &'s str,
    ) -> impl Iterator<Item = (&'static str, Relation<'s>)> {
        let conflicts = groups(&self.conflicts, arch)
            .flatten()
            .map(|r| ("Conflicts", r));
        conflicts.chain(groups(&self.breaks, arch).flatten().map(|r| ("Breaks", r)))
    }
}

fn show_group(group: &[Relation]) -> String {
    group
        .iter()
        .map(Relation::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The packages chosen so far, findable by name and by what they provide.
struct Selection<'a> {
    index: &'a Index,
    chosen: Vec<usize>,
    by_name: HashMap<&'a str, usize>,
    by_provide: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Selection<'a> {
    fn new(index: &'a Index) -> Selection<'a> {
        Selection {
            index,
            chosen: Vec::new(),
            by_name: HashMap::new(),
            by_provide: HashMap::new(),
        }
    }

    /// Adds `id`; false if its name was already chosen.
    fn insert(&mut self, id: usize) -> bool {
        let package = &self.index.packages[id];
        if self.by_name.contains_key(package.name.as_str()) {
            return false;
        }
        self.by_name.insert(&package.name, id);
        for provide in &package.provides {
            self.by_provide.entry(&provide.name).or_default().push(id);
        }
        self.chosen.push(id);
        true
    }

    /// Chosen packages that satisfy `relation`, itself first.
    fn matching<'s>(&'s self, relation: &'s Relation) -> impl Iterator<Item = usize> + 's {
        let packages = &self.index.packages;
        let by_name = self.by_name.get(relation.name).copied();
        let provided = self
            .by_provide
            .get(relation.name)
            .into_iter()
            .flatten()
            .copied();
        by_name
            .filter(move |&id| relation.is_met_by(&packages[id]))
            .into_iter()
            .chain(provided.filter(move |&id| relation.is_provided_by(&packages[id])))
    }

    /// The chosen package that satisfies `group`, trying alternatives in order.
    fn satisfier(&self, group: &[Relation]) -> Option<usize> {
        group
            .iter()
            .find_map(|relation| self.matching(relation).next())
    }
}

/// The bootstrap set: Essential ∪ Priority: required ∪ {apt} (Buildd adds
/// build-essential), closed over Pre-Depends and Depends, in install order.
pub fn resolve(index: &Index, variant: Variant) -> Result<Vec<&Package>> {
    let mut selection = Selection::new(index);
    let mut queue = VecDeque::new();
    for id in seeds(index, variant)? {
        if selection.insert(id) {
            queue.push_back(id);
        }
    }
    while let Some(id) = queue.pop_front() {
        let package = &index.packages[id];
        for (kind, group) in package.dependencies(&index.arch) {
            if selection.satisfier(&group).is_some() {
                continue;
            }
            let chosen =
                choose(index, &group).ok_or_else(|| unsatisfiable(index, package, kind, &group))?;
            if selection.insert(chosen) {
                queue.push_back(chosen);
            }
        }
    }
    check_conflicts(&selection)?;
    Ok(install_order(&selection))
}

/// Candidates of every Essential or required name (sorted by name, so the
/// result doesn't depend on hash order), then apt and build-essential.
fn seeds(index: &Index, variant: Variant) -> Result<Vec<usize>> {
    let mut seeds: Vec<usize> = index
        .versions
        .values()
        .map(|ids| ids[0])
        .filter(|&id| {
            let package = &index.packages[id];
            package.essential || package.priority == "required"
        })
        .collect();
    seeds.sort_by(|&a, &b| index.packages[a].name.cmp(&index.packages[b].name));
    let extra: &[&str] = match variant {
        Variant::Minbase => &["apt"],
        Variant::Buildd => &["apt", "build-essential"],
    };
    for name in extra {
        seeds.push(
            index
                .candidate(name)
                .with_context(|| format!("the package index has no `{name}`"))?,
        );
    }
    Ok(seeds)
}

/// What apt installs for an unsatisfied group: the first alternative with a
/// real package of a fitting version, else its best provider. `usrmerge`
/// goes last: den makes /usr merged itself, and `usr-is-merged` says so
/// without usrmerge's perl.
fn choose(index: &Index, group: &[Relation]) -> Option<usize> {
    let mut alternatives: Vec<&Relation> = group.iter().collect();
    alternatives.sort_by_key(|relation| relation.name == "usrmerge");
    alternatives.into_iter().find_map(|relation| {
        let real = index
            .candidate(relation.name)
            .filter(|&id| relation.is_met_by(&index.packages[id]));
        real.or_else(|| best_provider(index, relation))
    })
}

/// Among candidates providing `relation`, the most important priority,
/// then the first name: `mawk` for `awk`, as apt picks.
fn best_provider(index: &Index, relation: &Relation) -> Option<usize> {
    let ids = index.providers.get(relation.name)?;
    ids.iter()
        .copied()
        .filter(|&id| index.is_candidate(id) && relation.is_provided_by(&index.packages[id]))
        .min_by_key(|&id| {
            let package = &index.packages[id];
            (priority_rank(&package.priority), &package.name)
        })
}

fn priority_rank(priority: &str) -> u8 {
    match priority {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        "extra" => 4,
        _ => 5,
    }
}

fn unsatisfiable(
    index: &Index,
    package: &Package,
    kind: &str,
    group: &[Relation],
) -> anyhow::Error {
    let found: Vec<String> = group
        .iter()
        .filter_map(|relation| index.candidate(relation.name))
        .map(|id| format!("{} {}", index.packages[id].name, index.packages[id].version))
        .collect();
    let found = if found.is_empty() {
        String::new()
    } else {
        format!(" (it has {})", found.join(", "))
    };
    anyhow::anyhow!(
        "cannot resolve the bootstrap set: `{}` {} {kind} `{}`, which nothing in the package index satisfies{found}",
        package.name,
        package.version,
        show_group(group)
    )
}

/// Fails if a chosen package Conflicts with or Breaks another chosen one.
fn check_conflicts(selection: &Selection) -> Result<()> {
    let packages = &selection.index.packages;
    for &id in &selection.chosen {
        let package = &packages[id];
        for (kind, relation) in package.conflicts(&selection.index.arch) {
            // A package may conflict with a name it provides itself.
            if let Some(other) = selection.matching(&relation).find(|&other| other != id) {
                let other = &packages[other];
                bail!(
                    "the bootstrap set is not installable: `{}` {} {kind} `{relation}`, and it has `{}` {}",
                    package.name,
                    package.version,
                    other.name,
                    other.version
                );
            }
        }
    }
    Ok(())
}

/// The packages named in a lock (name → exact version), in install order;
/// fails with [`MissingPackages`] listing every one the index lacks.
pub fn pinned<'a>(index: &'a Index, locked: &BTreeMap<String, String>) -> Result<Vec<&'a Package>> {
    let mut selection = Selection::new(index);
    let mut missing = Vec::new();
    for (name, version) in locked {
        match index.exact(name, version) {
            Some(id) => {
                selection.insert(id);
            }
            None => missing.push((name.clone(), version.clone())),
        }
    }
    if !missing.is_empty() {
        return Err(MissingPackages { packages: missing }.into());
    }
    Ok(install_order(&selection))
}

/// Dependencies before dependents. Cycles (libc6 ↔ libgcc-s1) are kept
/// together and ordered by their Pre-Depends, then by name: dpkg runs with
/// --force-depends, so only Pre-Depends order matters to it inside one.
fn install_order<'a>(selection: &Selection<'a>) -> Vec<&'a Package> {
    let packages = &selection.index.packages;
    let chosen = &selection.chosen;
    let name = |i: usize| packages[chosen[i]].name.as_str();
    let edges = dependency_edges(selection);
    let mut by_name: Vec<usize> = (0..chosen.len()).collect();
    by_name.sort_by_key(|&i| name(i));
    let mut tarjan = Tarjan::new(&edges);
    for i in by_name {
        if tarjan.index[i].is_none() {
            tarjan.visit(i);
        }
    }
    let mut order = Vec::with_capacity(chosen.len());
    for component in &tarjan.components {
        order.extend(order_cycle(component, &edges, name).map(|i| &packages[chosen[i]]));
    }
    order
}

/// For each chosen package (by position in `chosen`), the chosen packages
/// its dependency groups resolve to, each once, marked true for Pre-Depends.
fn dependency_edges(selection: &Selection) -> Vec<Vec<(usize, bool)>> {
    let packages = &selection.index.packages;
    let local: HashMap<usize, usize> = selection
        .chosen
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let arch = &selection.index.arch;
    let edges_of = |i: usize, id: usize| {
        let mut edges: Vec<(usize, bool)> = Vec::new();
        for (kind, group) in packages[id].dependencies(arch) {
            let dep = selection.satisfier(&group).map(|dep| local[&dep]);
            if let Some(dep) = dep.filter(|&dep| dep != i)
                && !edges.iter().any(|&(other, _)| other == dep)
            {
                edges.push((dep, kind == "Pre-Depends"));
            }
        }
        edges
    };
    selection
        .chosen
        .iter()
        .enumerate()
        .map(|(i, &id)| edges_of(i, id))
        .collect()
}

/// Tarjan's strongly connected components: each component is complete
/// only after every component it depends on, which is install order.
struct Tarjan<'g> {
    edges: &'g [Vec<(usize, bool)>],
    index: Vec<Option<usize>>,
    visited: usize,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    components: Vec<Vec<usize>>,
}

impl<'g> Tarjan<'g> {
    fn new(edges: &'g [Vec<(usize, bool)>]) -> Tarjan<'g> {
        let n = edges.len();
        Tarjan {
            edges,
            index: vec![None; n],
            visited: 0,
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            components: Vec::new(),
        }
    }

    fn visit(&mut self, v: usize) {
        let index = self.visited;
        self.visited += 1;
        self.index[v] = Some(index);
        self.low[v] = index;
        self.stack.push(v);
        self.on_stack[v] = true;
        let edges = self.edges;
        for &(w, _) in &edges[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(w_index) if self.on_stack[w] => self.low[v] = self.low[v].min(w_index),
                Some(_) => {}
            }
        }
        if self.low[v] == index {
            let start = self.stack.iter().rposition(|&w| w == v).unwrap_or(0);
            let component = self.stack.split_off(start);
            for &w in &component {
                self.on_stack[w] = false;
            }
            self.components.push(component);
        }
    }
}

/// The members of one component: repeatedly the one with the fewest
/// Pre-Depends on members not yet placed, then by name.
fn order_cycle<'c>(
    component: &'c [usize],
    edges: &'c [Vec<(usize, bool)>],
    name: impl Fn(usize) -> &'c str + 'c,
) -> impl Iterator<Item = usize> + 'c {
    let mut left: Vec<usize> = component.to_vec();
    std::iter::from_fn(move || {
        let waiting = |i: usize| {
            let pre = edges[i]
                .iter()
                .filter(|&&(dep, pre)| pre && left.contains(&dep));
            pre.count()
        };
        let (at, _) = left
            .iter()
            .enumerate()
            .min_by_key(|&(_, &i)| (waiting(i), name(i)))?;
        Some(left.swap_remove(at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(name: &str, version: &str, extra: &str) -> String {
        let hash = "ab".repeat(32);
        let priority = if extra.contains("Priority:") {
            ""
        } else {
            "Priority: optional\n"
        };
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{priority}\
             Filename: pool/{name}_{version}.deb\nSize: 100\nSHA256: {hash}\n{extra}\n\n"
        )
    }

    /// An index of `stanzas` (name, version, extra lines), plus `apt` when
    /// they don't define it.
    fn index(stanzas: &[(&str, &str, &str)]) -> Index {
        let mut text: String = stanzas.iter().map(|(n, v, e)| stanza(n, v, e)).collect();
        if !stanzas.iter().any(|(name, _, _)| *name == "apt") {
            text += &stanza("apt", "2.6", "");
        }
        let mut index = Index::new();
        index.add(&text, "amd64").unwrap();
        index
    }

    fn names(packages: &[&Package]) -> Vec<String> {
        let mut names: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names
    }

    fn minbase(index: &Index) -> Vec<String> {
        names(&resolve(index, Variant::Minbase).unwrap())
    }

    fn error(result: Result<Vec<&Package>>) -> String {
        format!("{:#}", result.expect_err("an error"))
    }

    fn position(order: &[&Package], name: &str) -> usize {
        order.iter().position(|p| p.name == name).unwrap()
    }

    #[test]
    fn seeds_are_essential_required_and_apt() {
        let index = index(&[
            ("dash", "0.5", "Essential: yes"),
            ("mount", "2.38", "Priority: required"),
            ("vim", "9.0", "Priority: standard"),
            ("build-essential", "12.9", "Depends: make"),
            ("make", "4.3", ""),
        ]);
        assert_eq!(minbase(&index), ["apt", "dash", "mount"]);
        let buildd = names(&resolve(&index, Variant::Buildd).unwrap());
        assert_eq!(buildd, ["apt", "build-essential", "dash", "make", "mount"]);
        let empty = Index::new();
        assert!(error(resolve(&empty, Variant::Minbase)).contains("no `apt`"));
    }

    #[test]
    fn alternatives_take_the_first_real_package_that_fits() {
        let index = index(&[
            ("apt", "2.6", "Depends: gone | lib (>= 2) | other | last"),
            ("lib", "1.0", ""),
            ("other", "1.0", ""),
            ("last", "1.0", ""),
        ]);
        assert_eq!(minbase(&index), ["apt", "other"]);
    }

    #[test]
    fn an_already_chosen_alternative_satisfies_the_group() {
        let index = index(&[
            ("apt", "2.6", "Depends: first | second"),
            ("first", "1", ""),
            ("second", "1", "Priority: required"),
        ]);
        assert_eq!(minbase(&index), ["apt", "second"]);
    }

    #[test]
    fn virtual_package_goes_to_the_most_important_provider() {
        let index = index(&[
            ("apt", "2.6", "Depends: awk, pager"),
            ("gawk", "5.2", "Provides: awk"),
            ("mawk", "1.3", "Provides: awk\nPriority: important"),
            ("original-awk", "2012", "Provides: awk"),
            ("more", "1", "Provides: pager"),
            ("less", "590", "Provides: pager"),
        ]);
        assert_eq!(minbase(&index), ["apt", "less", "mawk"]);
    }

    #[test]
    fn versioned_dependency_needs_a_versioned_provide() {
        let index = index(&[
            ("apt", "2.6", "Depends: foo (>= 2)"),
            ("plain", "1", "Provides: foo\nPriority: required"),
            ("versioned", "1", "Provides: foo (= 2.1)"),
            ("old", "1", "Provides: foo (= 1.0)"),
        ]);
        assert_eq!(minbase(&index), ["apt", "plain", "versioned"]);

        let index = self::index(&[
            ("apt", "2.6", "Depends: foo (>= 3)"),
            ("versioned", "1", "Provides: foo (= 2.1)"),
        ]);
        assert!(error(resolve(&index, Variant::Minbase)).contains("`foo (>= 3)`"));
    }

    #[test]
    fn usr_is_merged_is_preferred_over_usrmerge() {
        let helpers = "Depends: usrmerge | usr-is-merged\nPriority: required";
        let index = index(&[
            ("init-system-helpers", "1.65", helpers),
            ("usrmerge", "37", "Depends: perl"),
            ("perl", "5.36", ""),
            ("usr-is-merged", "37", ""),
        ]);
        assert_eq!(
            minbase(&index),
            ["apt", "init-system-helpers", "usr-is-merged"]
        );

        // noble: base-files provides usr-is-merged.
        let index = self::index(&[
            (
                "base-files",
                "13",
                "Essential: yes\nProvides: usr-is-merged",
            ),
            ("init-system-helpers", "1.66", helpers),
            ("usrmerge", "39", ""),
        ]);
        assert_eq!(
            minbase(&index),
            ["apt", "base-files", "init-system-helpers"]
        );

        // Nothing else satisfies the group: usrmerge it is.
        let index = self::index(&[
            ("init-system-helpers", "1.65", helpers),
            ("usrmerge", "37", ""),
        ]);
        assert_eq!(minbase(&index), ["apt", "init-system-helpers", "usrmerge"]);
    }

    #[test]
    fn unsatisfiable_dependency_names_package_and_relation() {
        let index = index(&[
            ("apt", "2.6", "Pre-Depends: libc6 (>= 2.40) | musl"),
            ("libc6", "2.36-9", ""),
        ]);
        let message = error(resolve(&index, Variant::Minbase));
        assert!(
            message.contains("`apt` 2.6 Pre-Depends `libc6 (>= 2.40) | musl`"),
            "{message}"
        );
        assert!(message.contains("it has libc6 2.36-9"), "{message}");
    }

    #[test]
    fn conflicts_use_real_version_comparison() {
        let perl_base = "Priority: required\nBreaks: perl (<< 5.36.0~)";
        let index = index(&[
            ("perl-base", "5.36.0-7", perl_base),
            ("perl", "5.36.0-7", "Priority: required"),
        ]);
        assert_eq!(minbase(&index), ["apt", "perl", "perl-base"]);

        let index = self::index(&[
            ("perl-base", "5.36.0-7", perl_base),
            ("perl", "5.34.0-5", "Priority: required"),
        ]);
        let message = error(resolve(&index, Variant::Minbase));
        assert!(
            message.contains("`perl-base` 5.36.0-7 Breaks `perl (<< 5.36.0~)`"),
            "{message}"
        );
        assert!(message.contains("`perl` 5.34.0-5"), "{message}");
    }

    #[test]
    fn conflicts_reach_providers_but_not_the_package_itself() {
        let mta =
            "Provides: mail-transport-agent\nConflicts: mail-transport-agent\nPriority: required";
        let index = index(&[("exim", "4", mta)]);
        assert_eq!(minbase(&index), ["apt", "exim"]);

        let index = self::index(&[("exim", "4", mta), ("postfix", "3", mta)]);
        let message = error(resolve(&index, Variant::Minbase));
        assert!(
            message.contains("Conflicts `mail-transport-agent`"),
            "{message}"
        );
    }

    #[test]
    fn highest_version_wins() {
        let mut index = index(&[("apt", "2.6", "Depends: lib (>= 1.10)"), ("lib", "1.9", "")]);
        let newer =
            stanza("lib", "1.10", "") + &stanza("lib", "1.9", "") + &stanza("lib", "1.10~rc1", "");
        index.add(&newer, "amd64").unwrap();
        assert_eq!(index.len(), 4);
        let set = resolve(&index, Variant::Minbase).unwrap();
        assert_eq!(set[position(&set, "lib")].version, "1.10");
    }

    #[test]
    fn install_order_respects_pre_depends() {
        let index = index(&[
            ("apt", "2.6", "Depends: dpkg, libc6"),
            ("dpkg", "1.21", "Pre-Depends: libc6, tar"),
            ("tar", "1.34", "Pre-Depends: libc6\nPriority: required"),
            // libc6 and libgcc-s1 depend on each other.
            ("libc6", "2.36", "Depends: libgcc-s1"),
            ("libgcc-s1", "12", "Depends: libc6"),
            // Sorts before libc6 but needs it: goes after the cycle.
            ("libacl1", "2.3", "Depends: libc6\nPriority: required"),
            // A cycle through a Pre-Depends: the plain Depends gives way.
            ("zz-pre", "1", "Pre-Depends: aa-dep\nPriority: required"),
            ("aa-dep", "1", "Depends: zz-pre"),
        ]);
        let order = resolve(&index, Variant::Minbase).unwrap();
        assert_eq!(order.len(), 8);
        assert!(position(&order, "libgcc-s1") < position(&order, "libacl1"));
        assert!(position(&order, "libc6") < position(&order, "libacl1"));
        assert!(position(&order, "libc6") < position(&order, "tar"));
        assert!(position(&order, "tar") < position(&order, "dpkg"));
        assert!(position(&order, "dpkg") < position(&order, "apt"));
        assert!(position(&order, "aa-dep") < position(&order, "zz-pre"));
        let again: Vec<_> = resolve(&index, Variant::Minbase)
            .unwrap()
            .iter()
            .map(|p| &p.name)
            .collect();
        assert_eq!(again, order.iter().map(|p| &p.name).collect::<Vec<_>>());
    }

    #[test]
    fn pinned_takes_exact_versions_in_install_order() {
        let mut index = index(&[
            ("libc6", "2.36-9+deb12u13", ""),
            ("tar", "1.34", "Pre-Depends: libc6"),
        ]);
        index
            .add(&stanza("libc6", "2.36-9+deb12u14", ""), "amd64")
            .unwrap();
        let locked = BTreeMap::from([
            ("tar".to_owned(), "1.34".to_owned()),
            ("libc6".to_owned(), "2.36-9+deb12u13".to_owned()),
        ]);
        let order = pinned(&index, &locked).unwrap();
        assert_eq!(
            order.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["libc6", "tar"]
        );
        assert_eq!(order[0].version, "2.36-9+deb12u13");
    }

    #[test]
    fn pinned_lists_every_missing_version() {
        let index = index(&[("libc6", "2.36-9+deb12u14", "")]);
        let mut locked: BTreeMap<String, String> = (1..=7)
            .map(|i| (format!("gone{i}"), format!("1.{i}")))
            .collect();
        locked.insert("libc6".to_owned(), "2.36-9+deb12u13".to_owned());
        locked.insert("apt".to_owned(), "2.6".to_owned());
        let err = pinned(&index, &locked).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("8 locked packages not in the index: gone1=1.1, "),
            "{message}"
        );
        assert!(message.ends_with(" and 3 more"), "{message}");
        let missing = &err.downcast_ref::<MissingPackages>().unwrap().packages;
        assert_eq!(missing.len(), 8);
        assert!(missing.contains(&("libc6".to_owned(), "2.36-9+deb12u13".to_owned())));
    }

    #[test]
    fn relation_syntax() {
        let index = index(&[
            (
                "apt",
                "2.6",
                "Depends: x [arm64] | y [!arm64 !i386], z:any (> 1) <!nocheck>, w [arm64]\n,",
            ),
            ("x", "1", ""),
            ("y", "1", ""),
            ("z", "1", ""),
            ("w", "1", ""),
        ]);
        assert_eq!(minbase(&index), ["apt", "y", "z"]);
        let text = "a (<< 1), b (<2), c(>=3) | d:native";
        check_relations(text, "amd64").unwrap();
        let shown: Vec<String> = groups(text, "amd64").map(|g| show_group(&g)).collect();
        assert_eq!(shown, ["a (<< 1)", "b (<= 2)", "c (>= 3) | d"]);
        for bad in ["a (~ 1)", "a (>= )", "a (>= 1", "| b", "a b"] {
            assert!(check_relations(bad, "amd64").is_err(), "{bad}");
        }
    }

    #[test]
    fn other_architectures_are_skipped() {
        let mut index = Index::new();
        let arm = stanza("x", "1", "").replace("amd64", "arm64");
        let all = stanza("y", "1", "").replace("amd64", "all");
        index
            .add(&(arm + &all + &stanza("z", "1", "")), "amd64")
            .unwrap();
        assert_eq!(index.len(), 2);
        assert!(index.candidate("x").is_none());
        let message = index
            .add(&stanza("w", "1", ""), "arm64")
            .unwrap_err()
            .to_string();
        assert!(message.contains("index of amd64 packages"), "{message}");
    }

    #[test]
    fn malformed_stanzas_are_named() {
        let mut index = Index::new();
        let no_filename = stanza("foo", "1", "").replace("Filename", "X-Filename");
        let message = format!("{:#}", index.add(&no_filename, "amd64").unwrap_err());
        assert!(
            message.contains("`foo`") && message.contains("no Filename field"),
            "{message}"
        );

        let no_name = stanza("foo", "1", "") + "Version: 1\n";
        let message = format!("{:#}", index.add(&no_name, "amd64").unwrap_err());
        assert!(
            message.contains("stanza 2 has no Package field"),
            "{message}"
        );

        let bad_depends = stanza("foo", "1", "Depends: bar (>> )");
        let message = format!("{:#}", index.add(&bad_depends, "amd64").unwrap_err());
        assert!(
            message.contains("`foo`") && message.contains("bad Depends"),
            "{message}"
        );

        let bad_hash = stanza("foo", "1", "").replace(&"ab".repeat(32), "abc");
        assert!(index.add(&bad_hash, "amd64").is_err());
    }
}

/// Checks the resolver against a real archive (network-free once the file
/// is on disk): `DEN_TEST_PACKAGES=/tmp/Packages [DEN_TEST_VARIANT=buildd]
/// [DEN_TEST_EXPECT=names.txt] cargo test --release --lib real_packages --
/// --ignored --nocapture`, where names.txt lists the package names
/// mmdebstrap installs, one a line.
#[cfg(test)]
mod real_archive {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use super::*;

    #[test]
    #[ignore = "needs DEN_TEST_PACKAGES=<an amd64 Packages file>"]
    fn real_packages() {
        let path = std::env::var("DEN_TEST_PACKAGES").expect("DEN_TEST_PACKAGES");
        let text = std::fs::read_to_string(path).unwrap();
        let variant = match std::env::var("DEN_TEST_VARIANT").as_deref() {
            Ok("buildd") => Variant::Buildd,
            _ => Variant::Minbase,
        };
        let start = Instant::now();
        let stanzas = deb822::paragraphs(&text).count();
        let split = start.elapsed();
        let start = Instant::now();
        let mut index = Index::new();
        index.add(&text, "amd64").unwrap();
        let indexed = start.elapsed();
        let start = Instant::now();
        let set = resolve(&index, variant).unwrap();
        let resolved = start.elapsed();
        println!(
            "{stanzas} stanzas split in {split:?}; {} packages indexed in {indexed:?}; \
             {variant:?}: {} packages resolved in {resolved:?}",
            index.len(),
            set.len()
        );
        let order: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
        println!("install order: {}", order.join(" "));
        let lock = set
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        let again: Vec<&str> = pinned(&index, &lock)
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(again, order, "pinned gives the same order");
        let Ok(expect) = std::env::var("DEN_TEST_EXPECT") else {
            return;
        };
        let expected: BTreeSet<String> = std::fs::read_to_string(expect)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let ours: BTreeSet<String> = order.iter().map(|&n| n.to_owned()).collect();
        let extra: Vec<_> = ours.difference(&expected).collect();
        let lacking: Vec<_> = expected.difference(&ours).collect();
        println!(
            "expected {}; only ours: {extra:?}; only expected: {lacking:?}",
            expected.len()
        );
        assert!(extra.is_empty() && lacking.is_empty());
    }
}
