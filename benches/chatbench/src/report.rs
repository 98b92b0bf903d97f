//! The run's results: aligned `label: value` lines for people, or one JSON object for scripts.
//!
//! JSON is written by hand: the values are numbers, booleans, null and a few short strings, which
//! does not justify a serialisation dependency. Keys are snake_case and stable; labels are for
//! reading and may change.

use std::fmt::Write;

/// One value in a report.
#[derive(Clone, Debug)]
pub enum Value {
    /// A count.
    Int(i64),
    /// A measurement printed with the given number of decimals.
    Float(f64, usize),
    /// A yes/no fact.
    Bool(bool),
    /// Not measured (printed as `n/a`, or `null` in JSON).
    Null,
    /// Free text.
    Text(String),
    /// Nested fields (a JSON object; prefixed labels in text).
    Group(Vec<Field>),
    /// Several lines of text (a JSON array; comma-separated in text).
    List(Vec<String>),
    /// Several values, e.g. one per node (a JSON array; comma-separated in text).
    Array(Vec<Value>),
}

impl Value {
    /// A count; saturates rather than wrapping for absurdly large values.
    pub fn count(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// An optional count.
    pub fn opt_count(n: Option<u64>) -> Value {
        n.map_or(Value::Null, Value::count)
    }

    /// An optional measurement with `decimals` decimals; non-finite values are not measurements.
    pub fn opt_float(x: Option<f64>, decimals: usize) -> Value {
        match x {
            Some(x) if x.is_finite() => Value::Float(x, decimals),
            _ => Value::Null,
        }
    }
}

/// A named value.
#[derive(Clone, Debug)]
pub struct Field {
    key: &'static str,
    label: &'static str,
    value: Value,
    unit: &'static str,
}

/// Builds a field: JSON `key`, human `label`, value and unit (may be empty).
pub fn field(key: &'static str, label: &'static str, value: Value, unit: &'static str) -> Field {
    Field {
        key,
        label,
        value,
        unit,
    }
}

/// An ordered list of fields plus free-text notes (warnings, the verdict).
#[derive(Debug, Default)]
pub struct Report {
    fields: Vec<Field>,
    notes: Vec<String>,
}

impl Report {
    /// Appends a field.
    pub fn add(
        &mut self,
        key: &'static str,
        label: &'static str,
        value: Value,
        unit: &'static str,
    ) {
        self.fields.push(field(key, label, value, unit));
    }

    /// Appends a note, shown after the fields (JSON key `notes`).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The report as one JSON object on one line; the notes are its last key, an array.
    pub fn to_json(&self) -> String {
        let mut fields = self.fields.clone();
        fields.push(field("notes", "notes", Value::List(self.notes.clone()), ""));
        let mut out = String::new();
        write_object(&mut out, &fields);
        out
    }

    /// The report as aligned `label: value` lines, notes last.
    pub fn to_text(&self) -> String {
        let mut rows = Vec::new();
        flatten(&self.fields, "", &mut rows);
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in rows {
            let _ = writeln!(out, "{:<w$} {value}", format!("{label}:"), w = width + 1);
        }
        for n in &self.notes {
            let _ = writeln!(out, "{n}");
        }
        out
    }
}

fn flatten(fields: &[Field], prefix: &str, rows: &mut Vec<(String, String)>) {
    for f in fields {
        let label = if prefix.is_empty() {
            f.label.to_owned()
        } else {
            format!("{prefix} {}", f.label)
        };
        match &f.value {
            Value::Group(inner) => flatten(inner, &label, rows),
            v => {
                let text = text_of(v);
                let unit = if f.unit.is_empty() || matches!(v, Value::Null | Value::Bool(_)) {
                    String::new()
                } else {
                    format!(" {}", f.unit)
                };
                rows.push((label, format!("{text}{unit}")));
            }
        }
    }
}

/// A value that is not a group, as text.
fn text_of(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Float(x, d) => format!("{x:.d$}"),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Null => "n/a".to_owned(),
        Value::Text(t) => t.clone(),
        Value::List(items) => items.join(", "),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        // Groups are flattened into labelled rows; inside an array one has no label to take.
        Value::Group(_) => "{..}".to_owned(),
    }
}

fn write_object(out: &mut String, fields: &[Field]) {
    out.push('{');
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_string(out, f.key);
        out.push_str(": ");
        write_value(out, &f.value);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(x, d) if x.is_finite() => {
            let _ = write!(out, "{x:.d$}");
        }
        Value::Float(..) | Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Text(t) => write_string(out, t),
        Value::Group(inner) => write_object(out, inner),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, item);
            }
            out.push(']');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::default();
        r.add("delivered", "delivered", Value::count(15200), "lines");
        r.add("elapsed_s", "elapsed", Value::Float(1.23456, 3), "s");
        r.add(
            "latency_us",
            "latency",
            Value::Group(vec![
                field("p50", "p50", Value::count(12), "us"),
                field("max", "max", Value::Null, "us"),
            ]),
            "",
        );
        r.add(
            "by_node",
            "by node",
            Value::Array(vec![Value::count(3), Value::Float(0.5, 1), Value::Null]),
            "s",
        );
        r.add("partial", "partial", Value::Bool(false), "");
        r.note("result: \"ok\"");
        r
    }

    #[test]
    fn json_is_one_object_with_nested_groups_and_escaped_text() {
        assert_eq!(
            sample().to_json(),
            concat!(
                r#"{"delivered": 15200, "elapsed_s": 1.235, "#,
                r#""latency_us": {"p50": 12, "max": null}, "by_node": [3, 0.5, null], "#,
                r#""partial": false, "#,
                r#""notes": ["result: \"ok\""]}"#
            )
        );
        assert_eq!(Report::default().to_json(), r#"{"notes": []}"#);
    }

    #[test]
    fn text_is_aligned_with_units() {
        let text = sample().to_text();
        let expected = "\
delivered:   15200 lines
elapsed:     1.235 s
latency p50: 12 us
latency max: n/a
by node:     3, 0.5, n/a s
partial:     no
result: \"ok\"
";
        assert_eq!(text, expected);
    }

    #[test]
    fn non_finite_floats_are_null() {
        assert!(matches!(Value::opt_float(Some(f64::NAN), 2), Value::Null));
        let mut out = String::new();
        write_value(&mut out, &Value::Float(f64::INFINITY, 1));
        assert_eq!(out, "null");
        let mut s = String::new();
        write_string(&mut s, "a\u{1}b\\");
        assert_eq!(s, r#""a\u0001b\\""#);
    }
}
