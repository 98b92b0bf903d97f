//! The real `chatbench` binary against an in-process server: its accounting must be exact.
//!
//! Correctness only: no assertion depends on timing, which depends on the machine. The server runs
//! on this test's runtime, so chatbench runs as a child process waited for on a blocking thread.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{TestServer, test_config};

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

/// Outer bound on one chatbench run; the runs below pass a shorter `--timeout`.
const RUN_BOUND: Duration = Duration::from_secs(60);

/// Runs chatbench with `args`, bounded by [`RUN_BOUND`] (killed past it).
async fn chatbench(args: &[String]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chatbench");
    let pid = Pid::from_raw(child.id() as i32);
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(RUN_BOUND, waiting).await {
        Ok(out) => out.unwrap().expect("wait for chatbench"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("chatbench {args:?} did not finish within {RUN_BOUND:?}");
        }
    }
}

/// The number under `key` in chatbench's one-line JSON (keys are unique, nested ones included).
fn number(json: &str, key: &str) -> f64 {
    let pattern = format!("\"{key}\": ");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pattern.len();
    let end = json[at..].find([',', '}']).map_or(json.len(), |e| at + e);
    json[at..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// Splits `template` into arguments, putting in the server's address and our PID (the server
/// runs in this process, so its CPU time and memory are ours).
fn argv(template: &str, addr: &str) -> Vec<String> {
    let pid = std::process::id().to_string();
    template
        .split_whitespace()
        .map(|a| a.replace("ADDR", addr).replace("PID", &pid))
        .collect()
}

/// Runs chatbench with `template` against `srv` and returns its JSON report; it must exit 0.
async fn run_json(srv: &TestServer, template: &str) -> String {
    let out = chatbench(&argv(template, &srv.addr.to_string())).await;
    let (json, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {json}\nstderr: {stderr}"
    );
    json
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn fanout_counts_every_delivery_exactly_once() {
    let srv = TestServer::start(test_config());
    let template = "fanout --addr ADDR --clients 20 --senders 4 --messages 200 --hello b{i} \
                    --pid PID --json --timeout 30";
    let json = run_json(&srv, template).await;
    // Every line reaches the 19 other clients: 4 x 200 x 19.
    assert_eq!(number(&json, "expected"), 15_200.0, "{json}");
    assert_eq!(number(&json, "delivered"), 15_200.0, "{json}");
    for key in ["lost", "duplicated", "reordered", "foreign", "disconnected"] {
        assert_eq!(number(&json, key), 0.0, "{key}: {json}");
    }
    assert!(number(&json, "server_cpu_s") >= 0.0);
    // The nanosecond figure is null only on a kernel without schedstat; the server (this
    // process) did relay 15,200 lines during the window, so it is not zero.
    if !json.contains("\"server_cpu_ns_s\": null") {
        assert!(number(&json, "server_cpu_ns_s") > 0.0, "{json}");
    }
    assert!(json.contains("\"partial\": false"), "{json}");
    srv.stop().await;
}

#[tokio::test]
async fn idle_reports_the_servers_memory() {
    let srv = TestServer::start(test_config());
    let template = "idle --addr ADDR --clients 50 --hold 0 --hello i{i} --pid PID --json \
                    --timeout 30";
    let json = run_json(&srv, template).await;
    assert_eq!(number(&json, "clients"), 50.0);
    assert!(number(&json, "rss_before_bytes") > 0.0, "{json}");
    assert!(number(&json, "rss_after_bytes") > 0.0, "{json}");
    srv.stop().await;
}

#[tokio::test]
async fn usage_and_connection_errors_exit_1_and_a_timeout_exits_2() {
    let missing = argv("fanout --addr 127.0.0.1:9 --clients 2", "");
    let out = chatbench(&missing).await;
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let too_many = argv(
        "fanout --addr ADDR --clients 2 --senders 3 --messages 1",
        "127.0.0.1:9",
    );
    let out = chatbench(&too_many).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("--senders"), "{:?}", text(&out));

    // A port nobody listens on any more: connection refused.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = chatbench(&argv(
        "idle --addr ADDR --clients 1 --timeout 5",
        &gone.to_string(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));

    // A listener that never accepts or answers: connections open (the kernel queues them) but
    // nothing is relayed, so the readiness barrier times out and the report is partial.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let template = "fanout --addr ADDR --clients 2 --senders 1 --messages 1 --json --timeout 1";
    let out = chatbench(&argv(template, &mute.local_addr().unwrap().to_string())).await;
    let (json, _) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(json.contains("\"partial\": true"), "{json}");
    drop(mute);
}
