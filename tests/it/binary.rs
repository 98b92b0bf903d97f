//! The real `groupchatd` binary: configuration errors, `--check-config`, and a graceful SIGTERM.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{DAEMON as BIN, Daemon, Scratch};
use crate::support::{TestClient, WAIT};

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn shipped_example_config_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/groupchatd.toml");
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn bad_config_exits_78_and_names_file_and_key() {
    let dir = Scratch::new("bad-config");
    let cases = [
        ("range.toml", "max_line_bytes = 10\n", "max_line_bytes"),
        (
            "unknown.toml",
            "listen = [\"127.0.0.1:0\"]\nfrobnicate = 1\n",
            "frobnicate",
        ),
        ("type.toml", "max_clients = \"lots\"\n", "max_clients"),
        ("addr.toml", "listen = [\"not-an-address\"]\n", "listen"),
    ];
    for (file, text, key) in cases {
        let path = dir.file(file, text);
        let (code, _, stderr) = check_config(&path);
        assert_eq!(code, 78, "{file}: {stderr}");
        assert!(
            stderr.contains(file) && stderr.contains(key),
            "{file}: {stderr}"
        );
        // Starting (not just checking) fails the same way, before binding anything.
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{file}");
    }
    let missing = dir.0.join("missing.toml");
    let (code, _, stderr) = check_config(&missing);
    assert_eq!(code, 78);
    assert!(stderr.contains("missing.toml"), "{stderr}");
    let out = Command::new(BIN)
        .args(["--check-config", "--listen", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[tokio::test]
async fn sigterm_tells_clients_and_exits_0() {
    let dir = Scratch::new("sigterm");
    let cfg = "motd = \"hello from the binary\"\nshutdown_grace_secs = 3\n";
    let mut d = Daemon::start(&dir, "g", cfg);
    let mut c = TestClient::connect(d.addr()).await;
    c.expect("*** hello from the binary").await;
    c.expect("*** Choose a nickname:").await;
    c.send("alice").await;
    c.read_until_line("*** Type /help for commands.").await;
    d.log_line("joined");
    let d_socket = d.socket.clone();
    d.signal(Signal::SIGTERM);
    assert_eq!(c.expect_closed().await, vec!["*** server shutting down"]);
    let code = tokio::task::spawn_blocking(move || {
        let code = d.wait_exit(Duration::from_secs(4) + WAIT);
        d.log_line("stopped");
        code
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(!d_socket.exists(), "admin socket removed on clean exit");
}
