//! HTTP for the tests: a plain HTTP/1.1 client over a `TcpStream` (one request per connection,
//! `Connection: close`, every step bounded by [`WAIT`]), and a strict parser of the two text
//! formats `/metrics` serves, OpenMetrics 1.0 and Prometheus 0.0.4.
//!
//! The parser is ours rather than a crate's on purpose: the crates that parse the text format
//! (`prometheus-parse`) read 0.0.4 leniently, line by line, and would accept an exposition that
//! Prometheus refuses. This one refuses what the formats forbid and what a scrape would choke on:
//! a sample before its family's `# TYPE`, a family split in two, a sample name that does not
//! belong to its family, a repeated series, a malformed label or value, a negative counter,
//! histogram buckets out of order or not cumulative, a `+Inf` bucket that differs from `_count`,
//! and (OpenMetrics) a missing `# EOF` or anything after it.

use std::collections::HashSet;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` as it is on a new connection and reads until the server closes it.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect within the bound")?;
    stream.write_all(raw).await?;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("the server closes within the bound")?;
    Ok(got)
}

/// `METHOD PATH` with `headers`; Err only if the connection fails (refused, reset).
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let got = exchange(addr, raw.as_bytes()).await?;
    Ok(parse_response(&got, method == "HEAD"))
}

/// `METHOD PATH`, which must get an answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    try_request(addr, method, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// `GET PATH`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[]).await
}

/// Parses one whole response; a body's length must match its `Content-Length`.
pub fn parse_response(raw: &[u8], head_only: bool) -> Response {
    let text = String::from_utf8(raw.to_vec()).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect(status_line);
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let response = Response {
        status,
        headers,
        body: body.to_owned(),
    };
    if let Some(len) = response.header("content-length") {
        let expected = if head_only { 0 } else { len.parse().unwrap() };
        assert_eq!(response.body.len(), expected, "{response:?}");
    }
    response
}

// ------------------------------------------------------------------------------------------------

/// Which text format an exposition is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

/// One sample: its full name, labels (in order) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One metric family: its `# TYPE` name (without `_total` for an OpenMetrics counter), type,
/// help, unit and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: String,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// A whole exposition, families in order.
#[derive(Debug)]
pub struct Exposition {
    pub families: Vec<Family>,
}

impl Exposition {
    /// The family whose samples include `sample` names (e.g. `x_total` or `x_bucket`).
    pub fn family_of(&self, sample: &str) -> Option<&Family> {
        self.families
            .iter()
            .find(|f| f.samples.iter().any(|s| s.name == sample) || f.name == sample)
    }

    /// The value of the sample `name` whose labels are exactly `labels` (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    /// Like [`value`](Self::value), for a sample that must be there.
    pub fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {self:#?}"))
    }
}

/// Parses `text` strictly as `format`.
pub fn parse_exposition(text: &str, format: Format) -> Result<Exposition, String> {
    let body = text
        .strip_suffix('\n')
        .ok_or("the exposition does not end with a newline")?;
    let mut lines: Vec<&str> = body.split('\n').collect();
    if format == Format::OpenMetrics {
        match lines.pop() {
            Some("# EOF") => {}
            other => return Err(format!("last line is {other:?}, not # EOF")),
        }
    }
    let mut families: Vec<Family> = Vec::new();
    let mut seen_families = HashSet::new();
    let mut seen_series = HashSet::new();
    for (n, line) in lines.iter().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let (keyword, rest) = meta
                .split_once(' ')
                .ok_or_else(|| at("bad comment".into()))?;
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            check_name(name).map_err(at)?;
            if keyword == "EOF" || (keyword == "UNIT" && format == Format::Prometheus) {
                return Err(at(format!("# {keyword} in this format")));
            }
            // A family's metadata opens it; a new name opens a new one.
            let open = families
                .last()
                .is_some_and(|f| f.name == name && f.samples.is_empty());
            if !open {
                if !seen_families.insert(name.to_owned()) {
                    return Err(at(format!("family {name} appears twice")));
                }
                families.push(Family {
                    name: name.to_owned(),
                    kind: String::new(),
                    help: String::new(),
                    unit: None,
                    samples: Vec::new(),
                });
            }
            let family = families.last_mut().unwrap();
            match keyword {
                "HELP" => family.help = value.to_owned(),
                "TYPE" => {
                    if !family.kind.is_empty() {
                        return Err(at("a second # TYPE".into()));
                    }
                    let known: &[&str] = match format {
                        Format::OpenMetrics => &[
                            "counter",
                            "gauge",
                            "histogram",
                            "gaugehistogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown",
                        ],
                        Format::Prometheus => {
                            &["counter", "gauge", "histogram", "summary", "untyped"]
                        }
                    };
                    if !known.contains(&value) {
                        return Err(at(format!("unknown type {value}")));
                    }
                    family.kind = value.to_owned();
                }
                "UNIT" => {
                    if !name.ends_with(&format!("_{value}")) {
                        return Err(at("the name does not end with its unit".into()));
                    }
                    family.unit = Some(value.to_owned());
                }
                other => return Err(at(format!("unknown keyword {other}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("a comment the formats do not have".into()));
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = families
            .last_mut()
            .filter(|f| !f.kind.is_empty())
            .ok_or_else(|| at("a sample before any # TYPE".into()))?;
        if !belongs(&sample.name, family, format) {
            return Err(at(format!(
                "sample {} is not of family {} ({})",
                sample.name, family.name, family.kind
            )));
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !seen_series.insert((sample.name.clone(), key_labels)) {
            return Err(at("the same series twice".into()));
        }
        if family.kind == "counter" && (sample.value.is_nan() || sample.value < 0.0) {
            return Err(at("a counter below zero".into()));
        }
        family.samples.push(sample);
    }
    for family in &families {
        if family.kind == "histogram" {
            check_histogram(family)?;
        }
    }
    Ok(Exposition { families })
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

/// `name{label="value",…} value` (no timestamps: this daemon writes none).
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
            if key.is_empty()
                || key.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                || key.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("bad label name {key:?}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                }
            };
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("label {key} twice"));
            }
            labels.push((key.to_owned(), value));
            rest = &after[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            } else {
                return Err("labels not closed".into());
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    if value.contains(' ') {
        return Err("something after the value".into());
    }
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{v:?} is not a number"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Whether sample `name` may appear in `family`.
fn belongs(name: &str, family: &Family, format: Format) -> bool {
    let base = family.name.as_str();
    match (family.kind.as_str(), format) {
        ("counter", Format::OpenMetrics) => {
            name == format!("{base}_total") || name == format!("{base}_created")
        }
        ("counter", Format::Prometheus) => name == base && name.ends_with("_total"),
        ("histogram", _) => ["_bucket", "_sum", "_count", "_created"]
            .iter()
            .any(|suffix| name == format!("{base}{suffix}")),
        _ => name == base,
    }
}

/// Buckets ascending, cumulative, ending at `+Inf` equal to `_count`; `le` only on buckets.
fn check_histogram(family: &Family) -> Result<(), String> {
    let name = &family.name;
    let mut last_le = f64::NEG_INFINITY;
    let mut last_count = 0.0;
    let mut buckets = 0;
    for s in family
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
    {
        let le = s
            .labels
            .iter()
            .find(|(k, _)| k == "le")
            .ok_or(format!("{name}: a bucket without le"))?;
        let le: f64 = match le.1.as_str() {
            "+Inf" => f64::INFINITY,
            v => v.parse().map_err(|_| format!("{name}: le {v:?}"))?,
        };
        if le <= last_le || s.value < last_count {
            return Err(format!("{name}: buckets out of order or not cumulative"));
        }
        (last_le, last_count) = (le, s.value);
        buckets += 1;
    }
    if buckets == 0 || last_le != f64::INFINITY {
        return Err(format!("{name}: no +Inf bucket"));
    }
    let count = family
        .samples
        .iter()
        .find(|s| s.name.ends_with("_count"))
        .ok_or(format!("{name}: no _count"))?;
    if count.value != last_count {
        return Err(format!(
            "{name}: _count {} but +Inf {last_count}",
            count.value
        ));
    }
    if !family.samples.iter().any(|s| s.name.ends_with("_sum")) {
        return Err(format!("{name}: no _sum"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_refuses_what_the_formats_forbid() {
        let good = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n";
        parse_exposition(good, Format::Prometheus).unwrap();
        let om = "# HELP x Things.\n# TYPE x counter\nx_total 3\n# EOF\n";
        parse_exposition(om, Format::OpenMetrics).unwrap();
        let h = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
        parse_exposition(h, Format::Prometheus).unwrap();
        let bad = [
            (om.trim_end_matches("# EOF\n"), Format::OpenMetrics),
            ("x 1\n", Format::Prometheus),
            (
                "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\n# TYPE x gauge\n",
                Format::Prometheus,
            ),
            (
                "# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",
                Format::Prometheus,
            ),
            ("# TYPE x gauge\nx{a=\"1} 1\n", Format::Prometheus),
            ("# TYPE x gauge\nx one\n", Format::Prometheus),
            ("# TYPE x counter\nx_total 1\n", Format::Prometheus),
            ("# TYPE x_total counter\nx_total -1\n", Format::Prometheus),
            (&h.replace("h_count 2", "h_count 3"), Format::Prometheus),
            (&h.replace("le=\"1\"} 1", "le=\"1\"} 5"), Format::Prometheus),
            ("# TYPE x gauge\ny 1\n", Format::Prometheus),
            (
                "# TYPE x gauge\n# UNIT x seconds\n# EOF\n",
                Format::OpenMetrics,
            ),
        ];
        for (text, format) in bad {
            assert!(parse_exposition(text, format).is_err(), "accepted {text:?}");
        }
    }
}
