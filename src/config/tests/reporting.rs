//! How errors are located and worded: unknown keys, wrong types, TOML syntax,
//! unreadable files, the choice of file, and command-line overrides.

use std::path::{Path, PathBuf};

use super::{addr, parse, parse_err};
use crate::config::{Config, Overrides, load_effective_from};

#[test]
fn unknown_key_is_named_with_the_valid_ones() {
    let e = parse_err("max_clients = 5\n\nfrobnicate = true\n");
    assert_eq!((e.key.as_deref(), e.line), (Some("frobnicate"), Some(3)));
    let shown = e.to_string();
    assert!(
        shown.starts_with(
            "groupchatd.toml:3: key 'frobnicate': unknown key (valid keys: listen, tls_listen, tls_cert_file, tls_key_file, http_listen, https_listen, allowed_origins, admin_socket, "
        ),
        "{shown}"
    );
    assert!(
        shown.ends_with("tcp_keepalive_secs, worker_threads)"),
        "{shown}"
    );

    // A table is a key too; the file is flat.
    let e = parse_err("[server]\nlisten = [\"127.0.0.1:7000\"]\n");
    assert_eq!((e.key.as_deref(), e.line), (Some("server"), Some(1)));
    // kebab-case is not an alias for snake_case.
    assert_eq!(
        parse_err("max-clients = 1").key.as_deref(),
        Some("max-clients")
    );
}

#[test]
fn wrong_type_names_key_and_line() {
    let e = parse_err("listen = [\"127.0.0.1:7000\"]\nmax_clients = \"lots\"\n");
    assert_eq!(
        e.to_string(),
        "groupchatd.toml:2: key 'max_clients': expected an integer, found a string"
    );
    for (text, key, line, found) in [
        ("motd = 3", "motd", 1, "expected a string, found an integer"),
        ("listen = \"127.0.0.1:7000\"", "listen", 1, "found a string"),
        (
            "flood_rate = \"fast\"",
            "flood_rate",
            1,
            "expected a number, found a string",
        ),
        (
            "flood_burst = 2.5",
            "flood_burst",
            1,
            "expected an integer, found a float",
        ),
        (
            "idle_timeout_secs = true",
            "idle_timeout_secs",
            1,
            "found a boolean",
        ),
        ("motd = 1979-05-27", "motd", 1, "found a date-time"),
        // The span of an array element is on its own line; still the array's key.
        (
            "listen = [\n  \"127.0.0.1:7000\",\n  7001,\n]",
            "listen",
            3,
            "found an integer in the array",
        ),
        (
            "per_ip_exempt = [[\"10.0.0.0/8\"]]",
            "per_ip_exempt",
            1,
            "found an array in the array",
        ),
        ("max_clients.soft = 1", "max_clients", 1, "found a table"),
    ] {
        let e = parse_err(text);
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some(key), Some(line)),
            "{text}: {e}"
        );
        assert!(e.reason.contains(found), "{text}: {e}");
        assert!(!e.to_string().contains('\n'), "{text}: {e}");
    }
}

#[test]
fn syntax_error_has_a_line() {
    for (text, line, key) in [
        ("max_clients = 1\nlisten = [\n", 2, Some("listen")),
        ("max_clients = \n", 1, Some("max_clients")),
        ("motd = \"unterminated\n", 1, Some("motd")),
        ("max_clients = 1\nmax_clients = 2\n", 2, Some("max_clients")),
        ("\n\n= 5\n", 3, None),
    ] {
        let e = parse_err(text);
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert_eq!(e.key.as_deref(), key, "{text:?}: {e}");
        assert!(e.reason.starts_with("invalid TOML: "), "{text:?}: {e}");
        assert!(!e.to_string().contains('\n'), "{text:?}: {e}");
    }
}

/// A file under the system temp dir that is removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: Option<&str>) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "groupchatd-config-test-{}-{name}.toml",
            std::process::id()
        ));
        if let Some(text) = contents {
            std::fs::write(&path, text).unwrap();
        }
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let good = TempFile::new("good", Some("max_clients = 7\n"));
    assert_eq!(Config::load(&good.0).unwrap().max_clients, 7);

    let bad = TempFile::new("bad", Some("# comment\nmax_line_bytes = 10\n"));
    let e = Config::load(&bad.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: key 'max_line_bytes': must be between 64 and 1048576 (got 10)",
            bad.0.display()
        )
    );
}

#[test]
fn missing_file_names_file_and_os_reason() {
    let e = Config::load(Path::new("groupchatd.toml-does-not-exist")).unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (None, None));
    let shown = e.to_string();
    assert!(
        shown.starts_with("groupchatd.toml-does-not-exist: cannot read: "),
        "{shown}"
    );
    assert!(shown.contains("(os error 2)"), "{shown}");
}

#[test]
fn load_effective_chooses_the_file() {
    let missing = TempFile::new("missing", None);
    let present = TempFile::new("present", Some("max_clients = 9\n"));

    // An explicit path must exist.
    assert!(load_effective_from(Some(&missing.0), &present.0).is_err());
    let (c, used) = load_effective_from(Some(&present.0), &missing.0).unwrap();
    assert_eq!((c.max_clients, used), (9, Some(present.0.clone())));

    // No path: the default file if it exists, else the built-in defaults.
    let (c, used) = load_effective_from(None, &present.0).unwrap();
    assert_eq!((c.max_clients, used), (9, Some(present.0.clone())));
    let (c, used) = load_effective_from(None, &missing.0).unwrap();
    assert_eq!((c, used), (Config::default(), None));

    // A dangling symlink at the default path means a file was meant to be there.
    let dangling = TempFile::new("dangling", None);
    std::os::unix::fs::symlink(&missing.0, &dangling.0).unwrap();
    assert!(load_effective_from(None, &dangling.0).is_err());

    // A default file that exists but is broken is an error, not a fallback.
    let broken = TempFile::new("broken", Some("max_clients = \"x\"\n"));
    assert!(load_effective_from(None, &broken.0).is_err());
}

#[test]
fn overrides_beat_the_file() {
    let mut c =
        parse("listen = [\"127.0.0.1:7000\", \"[::1]:7000\"]\nlog_level = \"warn\"").unwrap();
    c.apply_overrides(&Overrides::default()).unwrap();
    assert_eq!(c.listen.len(), 2, "no flags change nothing");

    let o = Overrides {
        listen: vec!["0.0.0.0:7100".into()],
        admin_socket: Some("/tmp/admin.sock".into()),
        log_level: Some("debug".into()),
    };
    c.apply_overrides(&o).unwrap();
    assert_eq!(c.listen, vec![addr("0.0.0.0:7100")]);
    assert_eq!(
        c.admin_socket.as_deref(),
        Some(Path::new("/tmp/admin.sock"))
    );
    assert_eq!(c.log_level, "debug");
}

#[test]
fn bad_overrides_name_the_flag_and_change_nothing() {
    let cases: &[(Overrides, &str)] = &[
        (
            Overrides {
                listen: vec!["nonsense".into()],
                ..Overrides::default()
            },
            "command line: key '--listen': 'nonsense' is not a socket address (e.g. 127.0.0.1:7000 or [::]:7000)",
        ),
        (
            Overrides {
                listen: vec!["[::]:1".into(), "[::]:1".into()],
                ..Overrides::default()
            },
            "command line: key '--listen': '[::]:1' is listed more than once",
        ),
        (
            Overrides {
                listen: vec!["127.0.0.1:7080".into()],
                ..Overrides::default()
            },
            "command line: key '--listen': 127.0.0.1:7080 is also in http_listen; one port cannot serve both",
        ),
        (
            Overrides {
                listen: vec!["0.0.0.0:7080".into()],
                ..Overrides::default()
            },
            "command line: key '--listen': 0.0.0.0:7080 overlaps 127.0.0.1:7080 in http_listen (0.0.0.0 and [::] take their port on every address of their family); one port cannot serve both",
        ),
        (
            Overrides {
                admin_socket: Some("rel/admin.sock".into()),
                ..Overrides::default()
            },
            "command line: key '--admin-socket': 'rel/admin.sock' is not an absolute path (e.g. /run/groupchatd/admin.sock)",
        ),
        (
            Overrides {
                listen: vec!["127.0.0.1:1".into()],
                log_level: Some(String::new()),
                ..Overrides::default()
            },
            "command line: key '--log-level': must not be empty (e.g. \"info\" or \"groupchatd=debug,warn\")",
        ),
    ];
    for (o, shown) in cases {
        let mut c = Config::default();
        let e = c.apply_overrides(o).unwrap_err();
        assert_eq!(e.to_string(), *shown);
        assert_eq!(e.file, None);
        assert_eq!(c, Config::default(), "a rejected override applies nothing");
    }
}

#[test]
fn quoted_values_with_control_characters_stay_one_inert_line() {
    // Found by the config fuzz target: reasons quote values, and TOML strings can hold newlines
    // and escape sequences.
    let cases = [
        "listen = [\"\"\"\u{a5}\n\"\"\"]\n",
        "admin_socket = \"run\\nx.sock\"\n",
        "log_level = \"info\\nx==\"\n",
        "log_level = \"\\u001b[2J\"\n",
        "per_ip_exempt = [\"10.0.0.0\\n/8\"]\n",
    ];
    for text in cases {
        let shown = parse_err(text).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(
            shown.contains("\\n") || shown.contains("\\u{1b}"),
            "escaped visibly: {shown:?}"
        );
    }
}

#[test]
fn log_filters_that_would_panic_tracing_subscriber_are_handled() {
    // Found by the config fuzz target: whitespace before a multi-byte character in a directive
    // made EnvFilter's parser slice inside a character and panic.
    for text in [
        "log_level = \"  \u{5c0f}\"\n",
        "log_level = \"info, \u{5c0f}x=debug\"\n",
    ] {
        let _ = parse(text); // must return, accepted or not, rather than panic
    }
    assert_eq!(
        parse("log_level = \" info , groupchatd=debug \"\n")
            .unwrap()
            .log_level,
        "info,groupchatd=debug"
    );
}
