//! den.yaml as a generic YAML tree that remembers where every key and value
//! came from. Checking the schema on this tree ourselves, rather than with
//! serde derives, is what lets every message name the exact key and place.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{
    Budget, DuplicateKeyPolicy, MessageFormatter, NonFiniteFloatPolicy, Spanned,
    UserMessageFormatter,
};

use super::error::{Issue, Pos};

/// A value with `referenced` (where it is used; for an alias, the `*name`)
/// and `defined` (where its text is) locations.
pub(super) type Node = Spanned<Value>;

#[derive(Debug)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// In file order, duplicates kept so the schema check can report them.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// For messages: "`from` is a list".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "empty",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

/// Parses the whole file; `None` when it holds no document at all.
pub(super) fn parse(text: &str) -> Result<Option<Node>, Issue> {
    let options = serde_saphyr::options! {
        // `yes`/`on` stay strings, so `accepts-arguments: yes` gets a clear error.
        strict_booleans: true,
        // Repeated keys reach us, so the message can point at both.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // `.nan` as an environment value is just text.
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
        // We word and place our own messages; skip building snippets.
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(syntax_error)
}

fn syntax_error(err: serde_saphyr::Error) -> Issue {
    let at = err.location().map_or(Pos { line: 0, column: 0 }, Pos::from);
    if let serde_saphyr::Error::Budget { breach, .. } = unwrapped(&err) {
        return Issue::text(
            at,
            format!(
                "the YAML is too large or too complex: {}",
                over_budget(breach)
            ),
        );
    }
    // The parser's text may quote the file; keep control characters out of the terminal.
    let message: String = UserMessageFormatter
        .format_message(&err)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Issue::text(at, format!("invalid YAML: {message}"))
}

/// The error itself, out of the wrappers that say it came through an alias.
fn unwrapped(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    use serde_saphyr::Error::{AliasError, WithSnippet};
    while let AliasError { error, .. } | WithSnippet { error, .. } = err {
        err = error;
    }
    err
}

/// Which of the parser's limits (its default `Budget`) a file went over.
fn over_budget(breach: &BudgetBreach) -> String {
    let limits = Budget::default();
    let bomb = "(an alias bomb?)";
    match breach {
        BudgetBreach::Nodes { .. } => format!("more than {} nodes {bomb}", limits.max_nodes),
        BudgetBreach::Events { .. } => format!("more than {} parser events", limits.max_events),
        BudgetBreach::Aliases { .. } => format!("more than {} aliases {bomb}", limits.max_aliases),
        BudgetBreach::Anchors { .. } => format!("more than {} anchors", limits.max_anchors),
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => {
            format!("{aliases} aliases for {anchors} anchors {bomb}")
        }
        BudgetBreach::RecordedAnchorEvents { .. } | BudgetBreach::RecordedAnchorBytes { .. } => {
            format!("its anchors hold too much to repeat {bomb}")
        }
        BudgetBreach::MergeKeys { .. } => {
            format!("more than {} merge keys (`<<`)", limits.max_merge_keys)
        }
        BudgetBreach::Depth { .. } => {
            format!("lists and maps nested more than {} deep", limits.max_depth)
        }
        BudgetBreach::Documents { .. } => {
            format!("more than {} documents", limits.max_documents)
        }
        BudgetBreach::ScalarBytes { .. } => format!(
            "more than {} bytes of values",
            limits.max_total_scalar_bytes
        ),
        other => format!("a parser limit ({other:?})"),
    }
}

/// den.yaml as text, or where its first non-UTF-8 byte is.
pub(super) fn utf8(bytes: &[u8]) -> Result<&str, Issue> {
    std::str::from_utf8(bytes).map_err(|err| {
        let valid = String::from_utf8_lossy(&bytes[..err.valid_up_to()]);
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        let at = Pos {
            line: valid.matches('\n').count() as u64 + 1,
            column: valid[line_start..].chars().count() as u64 + 1,
        };
        Issue::new(at, "this is not UTF-8 text", "a UTF-8 encoded YAML file")
    })
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn error(text: &str) -> String {
        let issue = parse(text).expect_err("the parser's limits refuse it");
        issue.into_error(Path::new("den.yaml")).to_string()
    }

    #[test]
    fn an_alias_bomb_is_refused_naming_the_limit() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let below = format!("*a{}, ", level - 1).repeat(10);
            bomb.push_str(&format!(
                "a{level}: &a{level} [{}]\n",
                below.trim_end_matches(", ")
            ));
        }
        let err = error(&bomb);
        let says = "the YAML is too large or too complex: more than 250000 nodes (an alias bomb?)";
        // At the alias that went over.
        assert!(err.starts_with(&format!("den.yaml:6:15: {says}")), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_naming_the_limit() {
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        // 64 levels of a debug build's frames need more than a test
        // thread's 2 MiB; den parses on its main thread (8 MiB).
        let parser = std::thread::Builder::new().stack_size(8 << 20);
        let err = parser.spawn(move || error(&deep)).unwrap().join().unwrap();
        assert!(err.starts_with("den.yaml:"), "{err}");
        assert!(
            err.contains("too large or too complex: lists and maps nested more than 64 deep"),
            "{err}"
        );
    }
}
