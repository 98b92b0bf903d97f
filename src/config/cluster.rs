//! The `[cluster]` table: how a node finds the NATS servers its rooms are shared through, and
//! what it is called there.
//!
//! Names end up in NATS subjects, stream and bucket names and key-value keys, so they are held to
//! the characters all of those accept (`[A-Za-z0-9_-]`): a name that NATS would refuse, or read
//! as a wildcard or a token separator, is a configuration error here rather than a failure to
//! join the cluster at run time.

use serde::Deserialize;
use toml::Spanned;

use super::document::Document;
use super::{ClusterConfig, ConfigError};

/// Every key of the `[cluster]` table with the type it takes. Must list exactly the fields of
/// `FileCluster` (a test checks this).
pub(super) const CLUSTER_KEYS: &[(&str, &str)] = &[
    (
        "nats_urls",
        "an array of NATS server URLs like [\"nats://127.0.0.1:4222\"]",
    ),
    ("node_name", "a name string like \"node-a\""),
    ("name", "a name string like \"groupchat\""),
    ("presence_ttl_secs", "an integer"),
    ("replicas", "an integer"),
    ("nats_creds_file", "a path string"),
    ("nats_user", "a string"),
    ("nats_password", "a string"),
    ("nats_token", "a string"),
    ("nats_ca_file", "a path string"),
];

/// Longest node or cluster name: they are parts of subjects and bucket names.
const MAX_NAME: usize = 64;
/// Most replicas JetStream keeps of a stream.
const MAX_REPLICAS: i64 = 5;

/// The `[cluster]` table as written, each value with its place in the text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    nats_urls: Option<Spanned<Vec<String>>>,
    node_name: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    presence_ttl_secs: Option<Spanned<i64>>,
    replicas: Option<Spanned<i64>>,
    nats_creds_file: Option<Spanned<String>>,
    nats_user: Option<Spanned<String>>,
    nats_password: Option<Spanned<String>>,
    nats_token: Option<Spanned<String>>,
    nats_ca_file: Option<Spanned<String>>,
}

/// A node or cluster name: 1..=64 of `[A-Za-z0-9_-]`.
pub(crate) fn name_rule(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters (got {v:?})"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "may contain only letters, digits, '_' and '-' (it names NATS subjects and buckets); {c:?} is not allowed (got {v:?})"
        ));
    }
    Ok(v.to_owned())
}

/// The node's default name: the host name, with anything NATS would not take replaced.
pub(crate) fn default_node_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let cleaned: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME)
        .collect();
    if cleaned.is_empty() {
        "node".to_owned()
    } else {
        cleaned
    }
}

fn url_rule(urls: &[String]) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("needs at least one NATS server URL".to_owned());
    }
    for u in urls {
        let rest = ["nats://", "tls://"]
            .iter()
            .find_map(|p| u.strip_prefix(p))
            .ok_or_else(|| format!("{u:?} must start with nats:// or tls://"))?;
        let hostport = rest.rsplit('@').next().unwrap_or(rest);
        if hostport.is_empty() || hostport.contains(['/', ' ']) {
            return Err(format!("{u:?} is not a URL like nats://host:4222"));
        }
    }
    Ok(urls.to_vec())
}

fn path_rule(v: &str) -> Result<std::path::PathBuf, String> {
    let p = std::path::Path::new(v);
    if !p.is_absolute() {
        return Err(format!("must be an absolute path (got {v:?})"));
    }
    Ok(p.to_owned())
}

/// Checks the table and returns what it configures.
pub(super) fn cluster(
    table: Spanned<FileCluster>,
    doc: &Document<'_>,
) -> Result<ClusterConfig, ConfigError> {
    let header = table.span().start;
    let t = table.into_inner();
    let mut c = ClusterConfig::new(default_node_name());
    let Some(urls) = t.nats_urls else {
        let reason =
            "[cluster] needs nats_urls (e.g. nats_urls = [\"nats://127.0.0.1:4222\"])".to_owned();
        return doc.check_at("cluster.nats_urls", header, Err(reason));
    };
    c.nats_urls = doc.check_at(
        "cluster.nats_urls",
        urls.span().start,
        url_rule(urls.get_ref()),
    )?;
    if let Some(v) = t.node_name {
        c.node_name = doc.check_at("cluster.node_name", v.span().start, name_rule(v.get_ref()))?;
    }
    if let Some(v) = t.name {
        c.name = doc.check_at("cluster.name", v.span().start, name_rule(v.get_ref()))?;
    }
    if let Some(v) = t.presence_ttl_secs {
        let n = *v.get_ref();
        let rule = if (2..=3600).contains(&n) {
            Ok(std::time::Duration::from_secs(n as u64))
        } else {
            Err(format!("must be 2 to 3600 seconds (got {n})"))
        };
        c.presence_ttl = doc.check_at("cluster.presence_ttl_secs", v.span().start, rule)?;
    }
    if let Some(v) = t.replicas {
        let n = *v.get_ref();
        let rule = if (1..=MAX_REPLICAS).contains(&n) {
            Ok(n as usize)
        } else {
            Err(format!("must be 1 to {MAX_REPLICAS} (got {n})"))
        };
        c.replicas = doc.check_at("cluster.replicas", v.span().start, rule)?;
    }
    if let Some(v) = t.nats_creds_file {
        let p = path_rule(v.get_ref());
        c.creds_file = Some(doc.check_at("cluster.nats_creds_file", v.span().start, p)?);
    }
    if let Some(v) = t.nats_ca_file {
        let p = path_rule(v.get_ref());
        c.ca_file = Some(doc.check_at("cluster.nats_ca_file", v.span().start, p)?);
    }
    c.user = t.nats_user.map(|v| v.into_inner());
    c.password = t.nats_password.map(|v| v.into_inner());
    c.token = t.nats_token.map(|v| v.into_inner());
    if c.user.is_some() != c.password.is_some() {
        let reason = "nats_user and nats_password go together".to_owned();
        return doc.check_at("cluster.nats_user", header, Err(reason));
    }
    let methods = [c.creds_file.is_some(), c.user.is_some(), c.token.is_some()];
    if methods.iter().filter(|m| **m).count() > 1 {
        let reason =
            "choose one of nats_creds_file, nats_user/nats_password and nats_token".to_owned();
        return doc.check_at("cluster.nats_token", header, Err(reason));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn absent_table_means_no_cluster() {
        assert_eq!(load("").unwrap().cluster, None);
    }

    #[test]
    fn defaults_and_values() {
        let c = load("[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\"]\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.name, "groupchat");
        assert_eq!(c.presence_ttl.as_secs(), 15);
        assert_eq!(c.replicas, 1);
        assert!(!c.node_name.is_empty());
        let c = load(
            "[cluster]\nnats_urls = [\"nats://a:1\", \"tls://b:2\"]\nnode_name = \"n-1\"\nname = \"gc_x\"\npresence_ttl_secs = 3\nreplicas = 3\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.nats_urls.len(), 2);
        assert_eq!(c.node_name, "n-1");
        assert_eq!(c.name, "gc_x");
        assert_eq!(c.replicas, 3);
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        for (text, key) in [
            ("[cluster]\n", "cluster.nats_urls"),
            ("[cluster]\nnats_urls = []\n", "cluster.nats_urls"),
            (
                "[cluster]\nnats_urls = [\"http://x:1\"]\n",
                "cluster.nats_urls",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\nnode_name = \"a.b\"\n",
                "cluster.node_name",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\nname = \"a*\"\n",
                "cluster.name",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\npresence_ttl_secs = 1\n",
                "cluster.presence_ttl_secs",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\nreplicas = 0\n",
                "cluster.replicas",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\nnats_creds_file = \"rel\"\n",
                "cluster.nats_creds_file",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\nnats_user = \"u\"\n",
                "cluster.nats_user",
            ),
            (
                "[cluster]\nnats_urls = [\"nats://x:1\"]\nbogus = 1\n",
                "cluster",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
