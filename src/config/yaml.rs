//! den.yaml as a generic YAML tree that remembers where every key and value
//! came from. Checking the schema on this tree ourselves, rather than with
//! serde derives, is what lets every message name the exact key and place.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{
    DuplicateKeyPolicy, MessageFormatter, NonFiniteFloatPolicy, Spanned, UserMessageFormatter,
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
    // The parser's text may quote the file; keep control characters out of the terminal.
    let message: String = UserMessageFormatter
        .format_message(&err)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Issue::text(at, format!("invalid YAML: {message}"))
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
