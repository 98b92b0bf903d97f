//! Each key's rule, table-driven: values accepted (and what they become) and
//! values rejected (with the key, line and reason named).

use std::path::Path;

use super::{addr, net, parse, parse_err, secs};
use crate::config::{Config, Flood, Rate, WebOrigin};

fn origin(s: &str) -> WebOrigin {
    s.parse().unwrap()
}

#[test]
fn accepted_values() {
    type Expect = fn(&mut Config);
    // (file text, how the result differs from the defaults)
    #[rustfmt::skip]
    let cases: &[(&str, Expect)] = &[
        (r#"listen = ["0.0.0.0:7000"]"#, |c| c.listen = vec![addr("0.0.0.0:7000")]),
        (r#"listen = ["[::]:7000", "[::1]:7001", "127.0.0.1:0"]"#,
            |c| c.listen = vec![addr("[::]:7000"), addr("[::1]:7001"), addr("127.0.0.1:0")]),
        (r#"admin_socket = "/run/chat/admin.sock""#, |c| c.admin_socket = Some("/run/chat/admin.sock".into())),
        (r#"admin_group = "chatops""#, |c| c.admin_group = Some("chatops".into())),
        (r#"log_level = "groupchatd=debug,warn""#, |c| c.log_level = "groupchatd=debug,warn".into()),
        (r#"log_level = "trace""#, |c| c.log_level = "trace".into()),
        (r#"motd = """#, |c| c.motd = vec![]),
        (r#"motd = "one line""#, |c| c.motd = vec!["one line".into()]),
        ("max_clients = 0", |c| c.max_clients = 0),
        ("max_clients = 50000", |c| c.max_clients = 50_000),
        ("max_clients_per_ip = 0", |c| c.max_clients_per_ip = 0),
        ("per_ip_exempt = []", |c| c.per_ip_exempt = vec![]),
        (r#"per_ip_exempt = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]"#,
            |c| c.per_ip_exempt = vec![net("10.0.0.0/8"), net("2001:db8::/32"), net("192.0.2.1/32")]),
        (r#"per_ip_exempt = ["10.0.0.1/32", " ::ffff:10.0.0.0/104 "]"#,
            |c| c.per_ip_exempt = vec![net("10.0.0.1"), net("::ffff:10.0.0.0/104")]),
        ("per_ip_prefix_v4 = 8", |c| c.per_ip_prefix_v4 = 8),
        ("per_ip_prefix_v4 = 24", |c| c.per_ip_prefix_v4 = 24),
        ("per_ip_prefix_v6 = 32", |c| c.per_ip_prefix_v6 = 32),
        ("per_ip_prefix_v6 = 128", |c| c.per_ip_prefix_v6 = 128),
        ("connect_rate = 0", |c| c.connect_rate = None),
        ("connect_burst = 0", |c| c.connect_rate = None),
        ("connect_rate = 0.01", |c| c.connect_rate = Some(Rate { burst: 20, per_sec: 0.01 })),
        ("connect_rate = 1000000", |c| c.connect_rate = Some(Rate { burst: 20, per_sec: 1e6 })),
        ("connect_burst = 1\nconnect_rate = 0.5", |c| c.connect_rate = Some(Rate { burst: 1, per_sec: 0.5 })),
        ("connect_burst = 100000", |c| c.connect_rate = Some(Rate { burst: 100_000, per_sec: 2.0 })),
        ("max_line_bytes = 64", |c| c.max_line_bytes = 64),
        ("max_line_bytes = 65536", |c| c.max_line_bytes = 65536),
        ("max_line_bytes = 1048576\nmax_queue_bytes = 4194304",
            |c| { c.max_line_bytes = 1 << 20; c.max_queue_bytes = 4 << 20; }),
        ("max_queue_bytes = 16384\nhistory_bytes = 8192", |c| { c.max_queue_bytes = 16384; c.history_bytes = 8192; }),
        // Without history_bytes, a lowered queue lowers it to half the queue (files from before
        // rooms had history stay valid).
        ("max_queue_bytes = 16384", |c| { c.max_queue_bytes = 16384; c.history_bytes = 8192; }),
        ("max_queue_bytes = 16384\nhistory_lines = 0", |c| { c.max_queue_bytes = 16384; c.history_lines = 0; c.history_bytes = 8192; }),
        ("max_line_bytes = 64\nmax_queue_bytes = 2048", |c| { c.max_line_bytes = 64; c.max_queue_bytes = 2048; c.history_bytes = 1024; }),
        ("max_queue_bytes = 1073741824", |c| c.max_queue_bytes = 1 << 30),
        ("write_timeout_secs = 1", |c| c.write_timeout = secs(1)),
        ("write_timeout_secs = 3600", |c| c.write_timeout = secs(3600)),
        ("handshake_timeout_secs = 0", |c| c.handshake_timeout = None),
        ("handshake_timeout_secs = 3600", |c| c.handshake_timeout = Some(secs(3600))),
        ("idle_timeout_secs = 0", |c| c.idle_timeout = None),
        ("idle_timeout_secs = 600", |c| c.idle_timeout = Some(secs(600))),
        ("flood_burst = 0", |c| c.flood = None),
        ("flood_rate = 0", |c| c.flood = None),
        ("flood_rate = 0.0\nflood_burst = 5", |c| c.flood = None),
        ("flood_burst = 3", |c| c.flood = Some(Flood { burst: 3, per_sec: 2.0 })),
        ("flood_rate = 0.5", |c| c.flood = Some(Flood { burst: 10, per_sec: 0.5 })),
        ("flood_rate = 5", |c| c.flood = Some(Flood { burst: 10, per_sec: 5.0 })),
        ("flood_rate = 0.01", |c| c.flood = Some(Flood { burst: 10, per_sec: 0.01 })),
        ("flood_rate = 1e6", |c| c.flood = Some(Flood { burst: 10, per_sec: 1e6 })),
        ("flood_rate = -0.0", |c| c.flood = None),
        ("flood_burst = 100000", |c| c.flood = Some(Flood { burst: 100_000, per_sec: 2.0 })),
        ("presence_max_members = 0", |c| c.presence_max_members = 0),
        ("wrap_width = 0", |c| c.wrap_width = 0),
        ("wrap_width = 132", |c| c.wrap_width = 132),
        (r##"default_room = "#Rust""##, |c| c.default_room = "#Rust".into()),
        (r#"default_room = " rust ""#, |c| c.default_room = "#rust".into()),
        ("default_room = \"\u{ff03}\u{ff52}ust\"", |c| c.default_room = "#rust".into()),
        (r#"default_room = "2024""#, |c| c.default_room = "#2024".into()),
        ("allow_user_rooms = false", |c| c.allow_user_rooms = false),
        ("allow_user_rooms = true", |_| {}),
        ("max_rooms = 1", |c| c.max_rooms = 1),
        ("max_rooms = 65000", |c| c.max_rooms = 65000),
        ("history_lines = 0", |c| c.history_lines = 0),
        ("history_lines = 1000", |c| c.history_lines = 1000),
        ("history_bytes = 1024", |c| c.history_bytes = 1024),
        // Half of the default max_queue_bytes.
        ("history_bytes = 131072", |c| c.history_bytes = 131072),
        ("history_bytes = 16777216\nmax_queue_bytes = 33554432",
            |c| { c.history_bytes = 16 << 20; c.max_queue_bytes = 32 << 20; }),
        // Without history the size does not matter, nor does the queue leave room for it.
        ("history_lines = 0\nhistory_bytes = 0", |c| { c.history_lines = 0; c.history_bytes = 0; }),
        ("history_lines = 0\nmax_line_bytes = 64\nmax_queue_bytes = 256",
            |c| { c.history_lines = 0; c.max_line_bytes = 64; c.max_queue_bytes = 256; c.history_bytes = 128; }),
        ("shutdown_grace_secs = 1", |c| c.shutdown_grace = secs(1)),
        ("shutdown_grace_secs = 300", |c| c.shutdown_grace = secs(300)),
        ("tcp_keepalive_secs = 0", |c| c.tcp_keepalive = None),
        ("tcp_keepalive_secs = 7200", |c| c.tcp_keepalive = Some(secs(7200))),
        ("worker_threads = 0", |c| c.worker_threads = 0),
        ("worker_threads = 64", |c| c.worker_threads = 64),
        ("http_listen = []", |c| c.http_listen = vec![]),
        // Another address on the same port, or the other family's wildcard, is no clash.
        (r#"listen = ["127.0.0.1:7000", "127.0.0.2:7000", "[::]:7000"]"#,
            |c| c.listen = vec![addr("127.0.0.1:7000"), addr("127.0.0.2:7000"), addr("[::]:7000")]),
        // The default HTTP port taken for chat is fine once HTTP moves or is off.
        ("listen = [\"127.0.0.1:7080\"]\nhttp_listen = []",
            |c| { c.listen = vec![addr("127.0.0.1:7080")]; c.http_listen = vec![]; }),
        (r#"http_listen = ["0.0.0.0:8080", "[::]:8080"]"#,
            |c| c.http_listen = vec![addr("0.0.0.0:8080"), addr("[::]:8080")]),
        ("allowed_origins = []", |c| c.allowed_origins = vec![]),
        (r#"allowed_origins = ["https://chat.example.org", "HTTP://127.0.0.1:7080"]"#,
            |c| c.allowed_origins = vec![origin("https://chat.example.org"), origin("http://127.0.0.1:7080")]),
        // Port 0 is a fresh port for each socket: it never clashes with listen's.
        ("listen = [\"127.0.0.1:0\"]\nhttp_listen = [\"127.0.0.1:0\"]",
            |c| { c.listen = vec![addr("127.0.0.1:0")]; c.http_listen = vec![addr("127.0.0.1:0")]; }),
    ];
    for (text, expect) in cases {
        let mut expected = Config::default();
        expect(&mut expected);
        match parse(text) {
            Ok(config) => assert_eq!(config, expected, "{text}"),
            Err(e) => panic!("{text:?} rejected: {e}"),
        }
    }
}

#[test]
fn rejected_values_name_key_and_line() {
    // (file text, key named, line named, part of the reason)
    #[rustfmt::skip]
    let cases: &[(&str, &str, usize, &str)] = &[
        ("listen = []", "listen", 1, "at least one"),
        (r#"listen = ["nonsense"]"#, "listen", 1, "'nonsense' is not a socket address"),
        (r#"listen = ["localhost:7000"]"#, "listen", 1, "not a socket address"),
        (r#"listen = ["127.0.0.1"]"#, "listen", 1, "not a socket address"),
        (r#"listen = ["[::]:7000", "[::]:7000"]"#, "listen", 1, "more than once"),
        (r#"http_listen = ["nonsense"]"#, "http_listen", 1, "'nonsense' is not a socket address"),
        (r#"http_listen = ["[::1]:80", "[::1]:80"]"#, "http_listen", 1, "more than once"),
        (r#"http_listen = ["127.0.0.1:7000"]"#, "http_listen", 1,
            "127.0.0.1:7000 is also in listen; one port cannot serve both"),
        ("http_listen = \"127.0.0.1:7080\"", "http_listen", 1, "found a string"),
        (r#"listen = ["127.0.0.1:7000", "127.0.0.1:7080"]"#, "listen", 1,
            "127.0.0.1:7080 is also in http_listen's default; one port cannot serve both: set http_listen to another address, or to [] for none"),
        ("tls_listen = [\"127.0.0.1:7080\"]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"", "tls_listen", 1,
            "127.0.0.1:7080 is also in http_listen's default"),
        // A wildcard address takes its port on every address of its family.
        (r#"listen = ["0.0.0.0:7000", "127.0.0.1:7000"]"#, "listen", 1,
            "'127.0.0.1:7000' overlaps 0.0.0.0:7000 in the same list: 0.0.0.0 and [::] take their port on every address of their family; list one or the other"),
        (r#"listen = ["[::1]:7000", "[::]:7000"]"#, "listen", 1, "'[::]:7000' overlaps [::1]:7000 in the same list"),
        (r#"http_listen = ["0.0.0.0:7000"]"#, "http_listen", 1,
            "0.0.0.0:7000 overlaps 127.0.0.1:7000 in listen (0.0.0.0 and [::] take their port on every address of their family); one port cannot serve both"),
        (r#"listen = ["0.0.0.0:7080"]"#, "listen", 1, "0.0.0.0:7080 overlaps 127.0.0.1:7080 in http_listen's default"),
        (r#"allowed_origins = ["chat.example.org"]"#, "allowed_origins", 1,
            "'chat.example.org' is not an origin: it must start with http:// or https://"),
        (r#"allowed_origins = ["https://chat.example.org/"]"#, "allowed_origins", 1,
            "not even a trailing / (write \"https://chat.example.org\")"),
        (r#"allowed_origins = ["https://a.example", "https://A.example:443"]"#, "allowed_origins", 1,
            "'https://A.example:443' is listed more than once (as https://a.example)"),
        ("allowed_origins = \"https://a.example\"", "allowed_origins", 1, "found a string"),
        (r#"admin_socket = "admin.sock""#, "admin_socket", 1, "not an absolute path"),
        (r#"admin_socket = """#, "admin_socket", 1, "not an absolute path"),
        (r#"admin_group = """#, "admin_group", 1, "must be a group name"),
        (r#"log_level = """#, "log_level", 1, "must not be empty"),
        (r#"log_level = "groupchatd=loud""#, "log_level", 1, "is not a log filter"),
        ("max_clients = -1", "max_clients", 1, "must not be negative (got -1)"),
        ("max_clients_per_ip = -5", "max_clients_per_ip", 1, "must not be negative"),
        (r#"per_ip_exempt = ["10.0.0.0/33"]"#, "per_ip_exempt", 1, "too long"),
        (r#"per_ip_exempt = ["ten/8"]"#, "per_ip_exempt", 1, "not an IP address"),
        (r#"per_ip_exempt = ["10.0.0.1/8"]"#, "per_ip_exempt", 1,
            "'10.0.0.1/8' has host bits set past the /8 prefix (did you mean 10.0.0.0/8? for one host, write 10.0.0.1)"),
        (r#"per_ip_exempt = ["10.0.0.0/8", "2001:db8::1/64"]"#, "per_ip_exempt", 1,
            "did you mean 2001:db8::/64?"),
        ("per_ip_prefix_v4 = 7", "per_ip_prefix_v4", 1, "must be between 8 and 32 (got 7)"),
        ("per_ip_prefix_v4 = 33", "per_ip_prefix_v4", 1, "must be between 8 and 32 (got 33)"),
        ("per_ip_prefix_v6 = 31", "per_ip_prefix_v6", 1, "must be between 32 and 128 (got 31)"),
        ("per_ip_prefix_v6 = 129", "per_ip_prefix_v6", 1, "must be between 32 and 128 (got 129)"),
        ("per_ip_prefix_v6 = -64", "per_ip_prefix_v6", 1, "between 32 and 128"),
        ("connect_rate = 0.005", "connect_rate", 1,
            "must be 0 (off) or between 0.01 and 1000000 connections per second (got 0.005)"),
        ("connect_rate = 1000000.5", "connect_rate", 1, "between 0.01 and 1000000 connections per second"),
        ("connect_rate = -1", "connect_rate", 1, "(got -1.0)"),
        ("connect_rate = nan", "connect_rate", 1, "(got NaN)"),
        ("connect_rate = inf", "connect_rate", 1, "(got inf)"),
        ("connect_burst = -1", "connect_burst", 1, "must be between 0 and 100000 (got -1)"),
        ("connect_burst = 100001", "connect_burst", 1, "must be between 0 and 100000 (got 100001)"),
        ("\n\nmax_line_bytes = 10", "max_line_bytes", 3, "must be between 64 and 1048576 (got 10)"),
        ("max_line_bytes = 1048577", "max_line_bytes", 1, "between 64 and 1048576"),
        ("max_line_bytes = 8192\nmax_queue_bytes = 32767", "max_queue_bytes", 2,
            "at least 4 times max_line_bytes = 32768"),
        // The default queue is too small for the raised line limit: blame the key that was set.
        ("max_line_bytes = 1048576", "max_line_bytes", 1, "set max_queue_bytes too"),
        ("max_queue_bytes = 1073741825", "max_queue_bytes", 1, "between 0 and 1073741824"),
        ("write_timeout_secs = 0", "write_timeout_secs", 1, "between 1 and 3600 (got 0)"),
        ("write_timeout_secs = 3601", "write_timeout_secs", 1, "between 1 and 3600"),
        ("handshake_timeout_secs = 3601", "handshake_timeout_secs", 1, "between 0 and 3600"),
        ("handshake_timeout_secs = -1", "handshake_timeout_secs", 1, "between 0 and 3600"),
        ("idle_timeout_secs = -1", "idle_timeout_secs", 1, "between 0 and"),
        ("idle_timeout_secs = 31536001", "idle_timeout_secs", 1, "between 0 and 31536000"),
        ("flood_burst = -1", "flood_burst", 1, "must be between 0 and 100000 (got -1)"),
        ("flood_burst = 100001", "flood_burst", 1, "between 0 and 100000"),
        ("flood_burst = 4294967296", "flood_burst", 1, "between 0 and 100000"),
        ("flood_rate = -0.5", "flood_rate", 1, "(got -0.5)"),
        // The value that aborted the daemon on a client's eleventh line (issue 11).
        ("flood_rate = 1e-19", "flood_rate", 1,
            "must be 0 (off) or between 0.01 and 1000000 lines per second (got 1e-19)"),
        ("flood_rate = 0.0099", "flood_rate", 1, "between 0.01 and 1000000"),
        ("flood_rate = 1e300", "flood_rate", 1, "(got 1e300)"),
        ("flood_rate = nan", "flood_rate", 1, "(got NaN)"),
        ("flood_rate = -inf", "flood_rate", 1, "(got -inf)"),
        ("presence_max_members = -1", "presence_max_members", 1, "must not be negative"),
        ("wrap_width = 19", "wrap_width", 1, "must be 0 (off) or between 20 and 1000 (got 19)"),
        ("wrap_width = 1001", "wrap_width", 1, "between 20 and 1000"),
        (r#"default_room = """#, "default_room", 1,
            "'' is not a valid room name: room names are # plus 1 to 32 letters, digits, - or _"),
        (r##"default_room = "#""##, "default_room", 1, "room names are # plus 1 to 32"),
        (r#"default_room = "lo bby""#, "default_room", 1,
            "'lo bby' is not a valid room name: ' ' is not allowed in a room name"),
        (r###"default_room = "##lobby""###, "default_room", 1, "'#' is not allowed in a room name"),
        ("default_room = \"p\u{430}ypal\"", "default_room", 1, "cannot mix scripts"),
        ("default_room = \"\\u001b[2Jlobby\"", "default_room", 1, "'\\u{1b}' is not allowed"),
        ("default_room = \"abcdefghijklmnopqrstuvwxyz1234567\"", "default_room", 1,
            "at most 32 characters after the #"),
        ("default_room = 3", "default_room", 1,
            "expected a room name string like \"lobby\", found an integer"),
        (r#"allow_user_rooms = "yes""#, "allow_user_rooms", 1, "expected true or false, found a string"),
        ("allow_user_rooms = 1", "allow_user_rooms", 1, "expected true or false, found an integer"),
        ("max_rooms = 0", "max_rooms", 1, "must be between 1 and 65000 (got 0)"),
        ("max_rooms = 65001", "max_rooms", 1, "must be between 1 and 65000 (got 65001)"),
        ("history_lines = -1", "history_lines", 1, "must be between 0 and 1000 (got -1)"),
        ("history_lines = 1001", "history_lines", 1, "must be between 0 and 1000 (got 1001)"),
        ("history_bytes = -1", "history_bytes", 1, "must be between 0 and 16777216 (got -1)"),
        ("history_bytes = 16777217\nmax_queue_bytes = 1073741824", "history_bytes", 1,
            "must be between 0 and 16777216 (got 16777217)"),
        ("history_bytes = 1023", "history_bytes", 1,
            "must be at least 1024 while rooms keep history (history_lines = 20) (got 1023); history_lines = 0 keeps none"),
        ("history_bytes = 0", "history_bytes", 1, "at least 1024"),
        ("history_bytes = 131073", "history_bytes", 1,
            "must be at most 131072, half of max_queue_bytes = 262144 (got 131073): a joiner is sent a room's history at once, and more than half its queue would make it look too slow"),
        ("max_queue_bytes = 16384\nhistory_bytes = 8193", "history_bytes", 2,
            "must be at most 8192, half of max_queue_bytes = 16384 (got 8193)"),
        // A queue too small for the least history, with history_bytes left to its default:
        // blame the key that was set.
        ("max_line_bytes = 64\nmax_queue_bytes = 2046", "max_queue_bytes", 2,
            "leaves 1023 bytes (half the queue) for replaying a room's history to a joiner (history_lines = 20), less than the 1024 history needs; max_queue_bytes = 2046 is too small for any history: raise it to at least 2048, or set history_lines = 0"),
        ("max_line_bytes = 64\nmax_queue_bytes = 2046\nhistory_bytes = 1024", "history_bytes", 3,
            "(got 1024): a joiner is sent a room's history at once, and more than half its queue would make it look too slow; max_queue_bytes = 2046 is too small for any history"),
        ("shutdown_grace_secs = 0", "shutdown_grace_secs", 1, "between 1 and 300"),
        ("shutdown_grace_secs = 301", "shutdown_grace_secs", 1, "between 1 and 300"),
        ("tcp_keepalive_secs = 7201", "tcp_keepalive_secs", 1, "between 0 and 7200"),
        ("worker_threads = 65", "worker_threads", 1, "between 0 and 64"),
        ("worker_threads = -1", "worker_threads", 1, "between 0 and 64"),
    ];
    for &(text, key, line, needle) in cases {
        let e = parse_err(text);
        assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        assert_eq!(e.line, Some(line), "{text}: {e}");
        assert!(e.reason.contains(needle), "{text}: {e}");
        assert_eq!(e.file.as_deref(), Some(Path::new("groupchatd.toml")));
    }
}

#[test]
fn admin_socket_mode_spellings() {
    for (text, mode) in [
        (r#"admin_socket_mode = "0660""#, 0o660),
        (r#"admin_socket_mode = "660""#, 0o660),
        (r#"admin_socket_mode = "0600""#, 0o600),
        (r#"admin_socket_mode = "0777""#, 0o777),
        ("admin_socket_mode = 0o640", 0o640),
        ("admin_socket_mode = 0o777", 0o777),
    ] {
        assert_eq!(
            parse(text).map(|c| c.admin_socket_mode).ok(),
            Some(mode),
            "{text}"
        );
    }
    for (text, needle) in [
        (
            r#"admin_socket_mode = "0999""#,
            "'0999' is not an octal file mode",
        ),
        (
            r#"admin_socket_mode = "rwx""#,
            "'rwx' is not an octal file mode",
        ),
        (r#"admin_socket_mode = """#, "not an octal file mode"),
        (r#"admin_socket_mode = "1777""#, "at most 0777 (got 1777)"),
        (r#"admin_socket_mode = "01777""#, "not an octal file mode"),
        (
            r#"admin_socket_mode = "0""#,
            "0000 does not give the owner read and write, so the daemon's own user could not use the socket; include 0600",
        ),
        (
            r#"admin_socket_mode = "0060""#,
            "0060 does not give the owner",
        ),
        (
            r#"admin_socket_mode = "0200""#,
            "0200 does not give the owner",
        ),
        (
            r#"admin_socket_mode = "0466""#,
            "0466 does not give the owner",
        ),
        ("admin_socket_mode = 0o0", "0000 does not give the owner"),
        ("admin_socket_mode = 0o1777", "at most 0o777"),
        ("admin_socket_mode = 660", "TOML integers are decimal"),
        ("admin_socket_mode = -1", "at most 0o777"),
        (
            "admin_socket_mode = 1.5",
            "expected an octal mode string like \"0660\" or an integer like 0o660, found a float",
        ),
    ] {
        let e = parse_err(text);
        assert_eq!(e.key.as_deref(), Some("admin_socket_mode"), "{text}: {e}");
        assert!(e.reason.contains(needle), "{text}: {e}");
    }
}

#[test]
fn motd_is_split_into_lines() {
    let cases: &[(&str, &[&str])] = &[
        (
            "motd = \"\"\"\nHello.\nRules: be nice.\n\"\"\"",
            &["Hello.", "Rules: be nice."],
        ),
        (r#"motd = "a\r\nb\r\n""#, &["a", "b"]),
        (r#"motd = "a\n\nb\n\n\n""#, &["a", "", "b"]),
        (r#"motd = "\n""#, &[]),
        (r#"motd = "  indented""#, &["  indented"]),
    ];
    for (text, lines) in cases {
        assert_eq!(parse(text).unwrap().motd, *lines, "{text}");
    }
    let max = format!("motd = \"{}\"", vec!["x".repeat(400); 20].join("\\n"));
    assert_eq!(parse(&max).unwrap().motd.len(), 20);

    let too_many = format!("motd = \"{}\"", vec!["x"; 21].join("\\n"));
    assert!(
        parse_err(&too_many)
            .reason
            .contains("has 21 lines; at most 20")
    );
    let too_long = format!("\nmotd = \"ok\\n{}\"", "x".repeat(401));
    let e = parse_err(&too_long);
    assert_eq!((e.key.as_deref(), e.line), (Some("motd"), Some(2)));
    assert!(
        e.reason.contains("line 2 is 401 bytes long; at most 400"),
        "{e}"
    );
}

#[test]
fn flood_is_disabled_by_either_zero() {
    assert_eq!(parse("flood_burst = 0").unwrap().flood, None);
    assert_eq!(parse("flood_rate = 0").unwrap().flood, None);
    assert_eq!(parse("flood_rate = 0.0").unwrap().flood, None);
    let both = parse("flood_burst = 20\nflood_rate = 0.25").unwrap().flood;
    assert_eq!(
        both,
        Some(Flood {
            burst: 20,
            per_sec: 0.25
        })
    );
}

#[test]
fn handshake_zero_means_no_limit() {
    assert_eq!(
        parse("handshake_timeout_secs = 0")
            .unwrap()
            .handshake_timeout,
        None
    );
    assert_eq!(Config::default().handshake_timeout, Some(secs(30)));
}

#[test]
fn peers_are_counted_per_prefix_network() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let c = Config::default();
    // Defaults: one IPv4 address, one IPv6 /64.
    assert_eq!(c.network_of(ip("192.0.2.7")), net("192.0.2.7/32"));
    assert_eq!(
        c.network_of(ip("2001:db8:1:2:aaaa::1")),
        net("2001:db8:1:2::/64")
    );
    assert_eq!(
        c.network_of(ip("2001:db8:1:2:ffff::9")),
        c.network_of(ip("2001:db8:1:2::1")),
        "one /64 is one network"
    );
    assert_ne!(
        c.network_of(ip("2001:db8:1:3::1")),
        c.network_of(ip("2001:db8:1:2::1"))
    );
    // IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 peer) counts as IPv4.
    assert_eq!(c.network_of(ip("::ffff:192.0.2.7")), net("192.0.2.7/32"));

    let c = parse("per_ip_prefix_v4 = 24\nper_ip_prefix_v6 = 48").unwrap();
    assert_eq!(c.network_of(ip("192.0.2.200")), net("192.0.2.0/24"));
    assert_eq!(c.network_of(ip("::ffff:192.0.2.200")), net("192.0.2.0/24"));
    assert_eq!(
        c.network_of(ip("2001:db8:7:ffff::1")),
        net("2001:db8:7::/48")
    );
}

#[test]
fn exemptions_match_networks_and_mapped_addresses() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let c = Config::default();
    assert!(c.is_exempt(ip("127.0.0.2")) && c.is_exempt(ip("::1")));
    assert!(c.is_exempt(ip("::ffff:127.0.0.1")));
    assert!(!c.is_exempt(ip("192.0.2.1")));
    let c = parse(r#"per_ip_exempt = ["192.0.2.10"]"#).unwrap();
    assert!(c.is_exempt(ip("192.0.2.10")) && !c.is_exempt(ip("192.0.2.11")));
    assert!(
        !c.is_exempt(ip("127.0.0.1")),
        "an explicit list replaces the default"
    );
}

#[test]
fn connect_rate_is_disabled_by_either_zero() {
    let default = Config::default().connect_rate;
    assert_eq!(
        default,
        Some(Rate {
            burst: 20,
            per_sec: 2.0
        })
    );
    assert_eq!(parse("connect_rate = 0").unwrap().connect_rate, None);
    assert_eq!(parse("connect_burst = 0").unwrap().connect_rate, None);
    assert_eq!(
        parse("connect_burst = 0\nconnect_rate = 5")
            .unwrap()
            .connect_rate,
        None
    );
}

#[test]
fn tls_settings() {
    let files =
        "tls_cert_file = \"/etc/tls/fullchain.pem\"\ntls_key_file = \"/etc/tls/privkey.pem\"\n";
    let c = parse(&format!(
        "tls_listen = [\"0.0.0.0:7443\", \"[::]:7443\"]\n{files}"
    ))
    .unwrap();
    assert_eq!(c.tls_listen, vec![addr("0.0.0.0:7443"), addr("[::]:7443")]);
    assert_eq!(
        c.tls_cert_file.as_deref(),
        Some(Path::new("/etc/tls/fullchain.pem"))
    );
    assert_eq!(
        c.tls_key_file.as_deref(),
        Some(Path::new("/etc/tls/privkey.pem"))
    );
    // Off by default, and off with an empty list even with files named.
    assert!(parse("").unwrap().tls_listen.is_empty());
    assert!(
        parse(&format!("tls_listen = []\n{files}"))
            .unwrap()
            .tls_listen
            .is_empty()
    );
    // Port 0 may be in both lists: each listener gets its own port.
    let both = parse(&format!(
        "listen = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n{files}"
    ));
    assert!(both.is_ok(), "{both:?}");

    // (file text, key named, line named (0: the key is missing), part of the reason)
    #[rustfmt::skip]
    let refused: &[(&str, &str, usize, &str)] = &[
        ("tls_listen = [\"127.0.0.1:7443\"]", "tls_cert_file", 0,
            "must be set while tls_listen is not empty: a PEM file with the certificate and its chain"),
        ("tls_listen = [\"127.0.0.1:7443\"]\ntls_cert_file = \"/c.pem\"", "tls_key_file", 0,
            "must be set while tls_listen is not empty: a PEM file with the certificate's private key"),
        ("tls_listen = [\"7443\"]", "tls_listen", 1,
            "'7443' is not a socket address (e.g. 127.0.0.1:7443 or [::]:7443)"),
        ("tls_listen = [\"[::]:7443\", \"[::]:7443\"]", "tls_listen", 1, "listed more than once"),
        ("listen = [\"127.0.0.1:7000\"]\ntls_listen = [\"127.0.0.1:7000\"]", "tls_listen", 2,
            "127.0.0.1:7000 is also in listen; one port cannot serve both"),
        ("listen = [\"127.0.0.1:7000\"]\ntls_listen = [\"0.0.0.0:7000\"]", "tls_listen", 2,
            "0.0.0.0:7000 overlaps 127.0.0.1:7000 in listen (0.0.0.0 and [::] take their port"),
        ("tls_cert_file = \"fullchain.pem\"", "tls_cert_file", 1,
            "'fullchain.pem' is not an absolute path"),
        ("tls_key_file = \"\"", "tls_key_file", 1, "is not an absolute path"),
        ("tls_key_file = 1", "tls_key_file", 1, "expected a path string, found an integer"),
    ];
    for &(text, key, line, needle) in refused {
        let e = parse_err(text);
        assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        assert_eq!(e.line, (line > 0).then_some(line), "{text}: {e}");
        assert!(e.reason.contains(needle), "{text}: {e}");
    }

    // `--listen` may not take a TLS address either.
    let mut c = parse(&format!("tls_listen = [\"127.0.0.1:7443\"]\n{files}")).unwrap();
    let o = crate::config::Overrides {
        listen: vec!["127.0.0.1:7443".into()],
        ..Default::default()
    };
    let e = c.apply_overrides(&o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "command line: key '--listen': 127.0.0.1:7443 is also in tls_listen; one port cannot serve both"
    );
}

#[test]
fn https_settings() {
    let files =
        "tls_cert_file = \"/etc/tls/fullchain.pem\"\ntls_key_file = \"/etc/tls/privkey.pem\"\n";
    let c = parse(&format!("https_listen = [\"0.0.0.0:8443\"]\n{files}")).unwrap();
    assert_eq!(c.https_listen, vec![addr("0.0.0.0:8443")]);
    assert!(c.tls_listen.is_empty(), "HTTPS without TLS line clients");
    assert!(parse("").unwrap().https_listen.is_empty(), "off by default");
    assert!(parse("https_listen = []").is_ok(), "[] needs no files");

    // (file text, key named, line named (0: the key is missing), part of the reason)
    #[rustfmt::skip]
    let refused: &[(&str, &str, usize, &str)] = &[
        ("https_listen = [\"127.0.0.1:8443\"]", "tls_cert_file", 0,
            "must be set while https_listen is not empty: a PEM file with the certificate and its chain"),
        ("https_listen = [\"127.0.0.1:8443\"]\ntls_cert_file = \"/c.pem\"", "tls_key_file", 0,
            "must be set while https_listen is not empty: a PEM file with the certificate's private key"),
        ("https_listen = [\"8443\"]", "https_listen", 1,
            "'8443' is not a socket address (e.g. 127.0.0.1:8443 or [::]:8443)"),
        ("https_listen = [\"[::]:8443\", \"[::]:8443\"]", "https_listen", 1, "listed more than once"),
        ("http_listen = [\"127.0.0.1:7080\"]\nhttps_listen = [\"127.0.0.1:7080\"]", "https_listen", 2,
            "127.0.0.1:7080 is also in http_listen; one port cannot serve both"),
        ("listen = [\"127.0.0.1:7000\"]\nhttps_listen = [\"127.0.0.1:7000\"]", "https_listen", 2,
            "127.0.0.1:7000 is also in listen"),
        ("tls_listen = [\"127.0.0.1:7443\"]\nhttps_listen = [\"0.0.0.0:7443\"]", "https_listen", 2,
            "0.0.0.0:7443 overlaps 127.0.0.1:7443 in tls_listen"),
        // http_listen's default is the earlier list, but https_listen is the line written.
        ("https_listen = [\"127.0.0.1:7080\"]", "https_listen", 1,
            "127.0.0.1:7080 is also in http_listen; one port cannot serve both"),
        ("https_listen = \"127.0.0.1:8443\"", "https_listen", 1, "found a string"),
    ];
    for &(text, key, line, needle) in refused {
        let e = parse_err(text);
        assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        assert_eq!(e.line, (line > 0).then_some(line), "{text}: {e}");
        assert!(e.reason.contains(needle), "{text}: {e}");
    }

    // `--listen` may not take an HTTPS address either.
    let mut c = parse(&format!("https_listen = [\"127.0.0.1:8443\"]\n{files}")).unwrap();
    let o = crate::config::Overrides {
        listen: vec!["127.0.0.1:8443".into()],
        ..Default::default()
    };
    let e = c.apply_overrides(&o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "command line: key '--listen': 127.0.0.1:8443 is also in https_listen; one port cannot serve both"
    );
}
