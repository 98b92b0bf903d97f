//! Where things are in the config text, for error messages.
//!
//! The text is parsed twice: first into a map of `Spanned` values, which catches
//! TOML syntax errors and records each top-level key's position and TOML type;
//! then into `FileConfig`. Errors from the second parse (unknown key, wrong type)
//! and from validation are mapped back through the first to a line and a key,
//! and toml's multi-line snippet is reduced to one sentence for the journal.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::ConfigError;
use super::cluster::CLUSTER_KEYS;
use super::file::KEYS;
use super::rooms::ROOM_KEYS;
use super::rules::Rule;

/// The config text plus the position and TOML type of each top-level key.
pub(super) struct Document<'a> {
    text: &'a str,
    origin: &'a Path,
    keys: BTreeMap<String, Entry>,
}

/// One top-level key's value as it appears in the text.
struct Entry {
    /// Byte range of the value (for a `[table]`, of its header).
    span: Range<usize>,
    /// toml's name for the value's type: "string", "integer", "array", ...
    kind: &'static str,
}

impl<'a> Document<'a> {
    /// First pass: syntax check and key positions.
    pub(super) fn parse(text: &'a str, origin: &'a Path) -> Result<Self, ConfigError> {
        let mut doc = Document {
            text,
            origin,
            keys: BTreeMap::new(),
        };
        let values: BTreeMap<String, Spanned<toml::Value>> = match toml::from_str(text) {
            Ok(values) => values,
            Err(e) => {
                let line = e.span().map(|s| doc.line_at(s.start));
                let key = line.and_then(|l| doc.key_on_line(l));
                let reason = format!("invalid TOML: {}", one_line(e.message()));
                return Err(doc.error(line, key, reason));
            }
        };
        doc.keys = values
            .into_iter()
            .map(|(key, value)| {
                let entry = Entry {
                    span: value.span(),
                    kind: value.get_ref().type_str(),
                };
                (key, entry)
            })
            .collect();
        Ok(doc)
    }

    /// Second pass: typed deserialisation, with toml's errors rephrased.
    pub(super) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| self.serde_error(&e))
    }

    /// Whether the file sets `key` at the top level.
    pub(super) fn has_key(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Attach this file, the key and its line to a rule's verdict.
    pub(super) fn check<T>(&self, key: &str, verdict: Rule<T>) -> Result<T, ConfigError> {
        verdict.map_err(|reason| {
            let line = self.keys.get(key).map(|e| self.line_at(e.span.start));
            self.error(line, Some(key.to_owned()), reason)
        })
    }

    /// Attach this file, `key` and the line of byte offset `at` to a rule's verdict: for keys
    /// inside a `[[rooms]]` table, whose place the table's reader knows.
    pub(super) fn check_at<T>(
        &self,
        key: &str,
        at: usize,
        verdict: Rule<T>,
    ) -> Result<T, ConfigError> {
        verdict.map_err(|reason| self.error(Some(self.line_at(at)), Some(key.to_owned()), reason))
    }

    fn error(&self, line: Option<usize>, key: Option<String>, reason: String) -> ConfigError {
        ConfigError {
            file: Some(self.origin.to_path_buf()),
            line,
            key,
            reason,
        }
    }

    fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = one_line(e.message());
        let span = e.span();
        let line = span.as_ref().map(|s| self.line_at(s.start));
        if let Some(name) = unknown_field(&message) {
            if in_room_table(&message) {
                return self.error(line, Some(format!("rooms.{name}")), unknown_room_key(name));
            }
            if lists_keys(&message, CLUSTER_KEYS) {
                let valid: Vec<&str> = CLUSTER_KEYS.iter().map(|(k, _)| *k).collect();
                let reason = format!(
                    "unknown key in the [cluster] table (valid keys: {})",
                    valid.join(", ")
                );
                return self.error(line, Some(format!("cluster.{name}")), reason);
            }
            let valid: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            let reason = format!("unknown key (valid keys: {})", valid.join(", "));
            return self.error(line, Some(name.to_owned()), reason);
        }
        if let Some((key, expected)) = span.as_ref().and_then(|s| self.room_key_holding(s)) {
            let reason = match element_kind(&message) {
                Some(found) => format!("expected {expected}, found {found}"),
                None => format!("expected {expected}: {message}"),
            };
            return self.error(line, Some(format!("rooms.{key}")), reason);
        }
        // A type error's span covers the value (or one element of an array
        // value), so the key is the one whose value encloses the span.
        let enclosing = span.as_ref().and_then(|span| {
            self.keys
                .iter()
                .find(|(_, e)| e.span.start <= span.start && span.end <= e.span.end)
                .map(|(key, entry)| (key, entry, span))
        });
        if let Some((key, entry, span)) = enclosing {
            if let Some((_, expected)) = KEYS.iter().find(|(k, _)| k == key) {
                let found = if *span == entry.span {
                    Some(article(entry.kind).to_owned())
                } else {
                    element_kind(&message).map(|k| format!("{k} in the array"))
                };
                let reason = match found {
                    Some(found) => format!("expected {expected}, found {found}"),
                    None => format!("expected {expected}: {message}"),
                };
                return self.error(line, Some(key.clone()), reason);
            }
        }
        self.error(line, line.and_then(|l| self.key_on_line(l)), message)
    }

    /// The `[[rooms]]` key (and the type it takes) whose value is at `span`, for a type error
    /// there: the key written just before the value, if it is a room key and the value is not
    /// that of a top-level key of the same name (`history_lines` is both).
    fn room_key_holding(&self, span: &Range<usize>) -> Option<(&'static str, &'static str)> {
        let before = self.text.get(..span.start)?.trim_end().strip_suffix('=')?;
        let before = before.trim_end();
        let start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let written = &before[start..];
        let top_level = self
            .keys
            .get(written)
            .is_some_and(|e| e.span.start <= span.start && span.end <= e.span.end);
        if top_level || !self.has_key("rooms") {
            return None;
        }
        ROOM_KEYS.iter().find(|(k, _)| *k == written).copied()
    }

    /// 1-based line of a byte offset.
    pub(super) fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The bare key of a `key = value` line, for errors toml reports without one.
    fn key_on_line(&self, line: usize) -> Option<String> {
        let text = self.text.lines().nth(line.checked_sub(1)?)?.trim_start();
        let end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(text.len());
        let (key, rest) = text.split_at(end);
        (!key.is_empty() && rest.trim_start().starts_with('=')).then(|| key.to_owned())
    }
}

/// toml's messages are normally one line; make sure the error stays one line.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// The field name in serde's "unknown field `x`, expected one of ...".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// Whether serde's "unknown field `x`, expected one of …" is about a `[[rooms]]` table: it lists
/// the table's keys. (Telling by position would not do: a table runs until the next header, and
/// an unknown top-level `[table]` after the rooms is not one of them.)
fn in_room_table(message: &str) -> bool {
    lists_keys(message, ROOM_KEYS)
}

/// Whether serde's "unknown field" message lists exactly the keys of one table.
fn lists_keys(message: &str, table: &[(&str, &str)]) -> bool {
    let keys: Vec<String> = table.iter().map(|(k, _)| format!("`{k}`")).collect();
    message.ends_with(&format!("expected one of {}", keys.join(", ")))
}

/// Why a key in a `[[rooms]]` table is unknown, with a hint when it is a top-level key that
/// landed in the table because it was written below a `[[rooms]]` header.
fn unknown_room_key(name: &str) -> String {
    let valid: Vec<&str> = ROOM_KEYS.iter().map(|(k, _)| *k).collect();
    let mut reason = format!(
        "unknown key in a [[rooms]] table (valid keys: {})",
        valid.join(", ")
    );
    if KEYS.iter().any(|(k, _)| *k == name) {
        reason.push_str(&format!(
            "; {name} is a top-level key: move it above the first [[rooms]] table, since TOML puts every key below a [[rooms]] header into that table"
        ));
    }
    reason
}

/// "a string" for toml's "string", and so on.
fn article(kind: &str) -> &'static str {
    match kind {
        "string" => "a string",
        "integer" => "an integer",
        "float" => "a float",
        "boolean" => "a boolean",
        "datetime" => "a date-time",
        "array" => "an array",
        "table" => "a table",
        _ => "a value of another type",
    }
}

/// The kind of the offending element in serde's "invalid type: integer `3`, expected ...".
fn element_kind(message: &str) -> Option<&'static str> {
    let what = message.strip_prefix("invalid type: ")?;
    [
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a float"),
        ("boolean", "a boolean"),
        ("sequence", "an array"),
        ("map", "a table"),
    ]
    .into_iter()
    .find(|(prefix, _)| what.starts_with(prefix))
    .map(|(_, phrase)| phrase)
}
