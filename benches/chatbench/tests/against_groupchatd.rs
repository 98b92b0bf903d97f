//! The real `chatbench` binary against an in-process groupchatd: its accounting must be exact.
//!
//! Correctness only: no assertion depends on timing, which depends on the machine. chatbench
//! imports nothing from groupchatd; only this test does, as a dev-dependency, to run the server
//! in-process (as the daemon's own tests do): `cargo test -p chatbench` then needs no prebuilt
//! daemon binary (another package's `CARGO_BIN_EXE_*` is not visible here), and `--pid` can name
//! this process. The server runs on this test's runtime, so chatbench runs as a child process
//! waited for on a blocking thread.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use groupchatd::app::App;
use groupchatd::config::Config;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_chatbench");

/// Outer bound on one chatbench run; the runs below pass a shorter `--timeout`.
const RUN_BOUND: Duration = Duration::from_secs(60);
/// Bound on the server's graceful stop.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// An in-process groupchatd on 127.0.0.1:0 (the minimal part of the daemon tests' `TestServer`).
struct TestServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Flood control off (chatbench sends as fast as it can); its own admin socket in the temp
    /// directory (short: Unix socket paths are limited to 108 bytes).
    fn start() -> TestServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let admin: PathBuf =
            std::env::temp_dir().join(format!("gcd-cb-{}-{n}.sock", std::process::id()));
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            // Tests run side by side; the default HTTP port is one for all of them.
            http_listen: vec![],
            admin_socket: Some(admin),
            flood: None,
            ..Config::default()
        };
        let app = App::bind(config).expect("bind 127.0.0.1:0");
        let addr = app.local_addrs()[0];
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        TestServer { addr, stop, task }
    }

    /// Triggers the graceful stop and waits (bounded) for `run` to return.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(STOP_BOUND, self.task)
            .await
            .expect("server stopped within the bound")
            .unwrap();
    }
}

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
    let srv = TestServer::start();
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
    // Each line of 64 bytes (and LF) arrives as `<bN> ` (the senders are b0-b3), those 64 bytes
    // and CRLF: 71 bytes. The greetings and join notices add a little per delivery.
    let per_delivery = number(&json, "bytes_per_delivery");
    assert!(
        (71.0..80.0).contains(&per_delivery),
        "{per_delivery} in {json}"
    );
    // The default: every line its own write(), and no schedule to stagger.
    assert_eq!(number(&json, "lines_per_write"), 1.0, "{json}");
    assert_eq!(number(&json, "writes"), 800.0, "{json}");
    assert!(json.contains("\"staggered\": null"), "{json}");
    srv.stop().await;
}

#[tokio::test]
async fn batch_and_schedule_modes_do_what_the_report_says() {
    let srv = TestServer::start();
    // As fast as possible, up to 64 lines per write: 200 lines take 4 writes per sender.
    let batched = "fanout --addr ADDR --clients 6 --senders 2 --messages 200 --batch 64 \
                   --hello m{i} --json --timeout 30";
    let json = run_json(&srv, batched).await;
    assert_eq!(number(&json, "lines_per_write"), 64.0, "{json}");
    assert_eq!(number(&json, "writes"), 8.0, "{json}");
    assert_eq!(number(&json, "lost"), 0.0, "{json}");
    // Rated: staggered by default, aligned with --synchronized; per-line writes either way.
    for (flag, staggered) in [("", "true"), ("--synchronized", "false")] {
        let rated = format!(
            "fanout --addr ADDR --clients 6 --senders 3 --messages 20 --rate 200 {flag} \
             --hello r{{i}} --json --timeout 30"
        );
        let json = run_json(&srv, &rated).await;
        assert!(
            json.contains(&format!("\"staggered\": {staggered}")),
            "{json}"
        );
        assert_eq!(number(&json, "writes"), 60.0, "{json}");
        assert_eq!(number(&json, "delivered"), 300.0, "{json}");
    }
    // Lockstep: each write waits for the lines before it, so the run still completes exactly.
    let lockstep = "fanout --addr ADDR --clients 6 --senders 2 --messages 50 --lockstep \
                    --hello l{i} --json --timeout 30";
    let json = run_json(&srv, lockstep).await;
    assert!(json.contains("\"lockstep\": true"), "{json}");
    assert_eq!(number(&json, "writes"), 100.0, "{json}");
    assert_eq!(number(&json, "delivered"), 500.0, "{json}");
    srv.stop().await;
}

#[tokio::test]
async fn rooms_count_a_senders_lines_in_its_own_room_only() {
    let srv = TestServer::start();
    // 4 rooms of 5, one sender in each: every line reaches the 4 others of its room.
    let template = "fanout --addr ADDR --clients 20 --senders 4 --rooms 4 --messages 100 \
                    --hello q{i} --pid PID --json --timeout 30";
    let json = run_json(&srv, template).await;
    assert_eq!(number(&json, "rooms"), 4.0, "{json}");
    assert_eq!(number(&json, "expected"), 1_600.0, "{json}");
    assert_eq!(number(&json, "delivered"), 1_600.0, "{json}");
    for key in ["lost", "duplicated", "reordered", "foreign", "disconnected"] {
        assert_eq!(number(&json, key), 0.0, "{key}: {json}");
    }
    // Rooms of unequal size (4, 3, 3), two senders in room 0: 2 x 3 + 2 + 2 receivers per
    // line, under lockstep too when the rooms are of one size.
    let template = "fanout --addr ADDR --clients 10 --senders 4 --rooms 3 --messages 50 \
                    --hello u{i} --json --timeout 30";
    let json = run_json(&srv, template).await;
    assert_eq!(number(&json, "expected"), 500.0, "{json}");
    assert_eq!(number(&json, "delivered"), 500.0, "{json}");
    assert_eq!(number(&json, "foreign"), 0.0, "{json}");
    let template = "fanout --addr ADDR --clients 9 --senders 3 --rooms 3 --messages 20 \
                    --lockstep --hello k{i} --json --timeout 30";
    let json = run_json(&srv, template).await;
    assert_eq!(number(&json, "delivered"), 120.0, "{json}");
    // All in one room by the join line: the same as without rooms.
    let template = "fanout --addr ADDR --clients 6 --senders 2 --rooms 1 --messages 50 \
                    --hello o{i} --json --timeout 30";
    let json = run_json(&srv, template).await;
    assert_eq!(number(&json, "delivered"), 500.0, "{json}");
    srv.stop().await;
}

#[tokio::test]
async fn several_addresses_spread_the_clients_round_robin() {
    // One server listed three times stands in for three nodes of a cluster: client i opens to
    // address i % 3, so each "node" holds 2 of the 6 clients, and the lines of sender s reach
    // 1 client on its own node and 4 on the others.
    let srv = TestServer::start();
    let template = "fanout --addr ADDR --addr ADDR,ADDR --clients 6 --senders 3 --messages 40 \
                    --hello n{i} --pid PID,PID --json --timeout 30";
    let json = run_json(&srv, template).await;
    assert_eq!(number(&json, "nodes"), 3.0, "{json}");
    assert_eq!(number(&json, "delivered"), 600.0, "{json}");
    assert_eq!(number(&json, "cross_node_delivered"), 480.0, "{json}");
    for key in ["lost", "duplicated", "reordered", "foreign", "disconnected"] {
        assert_eq!(number(&json, key), 0.0, "{key}: {json}");
    }
    // Node k holds sender k (2 other senders' lines) and client k + 3 (all 3 senders').
    assert!(
        json.contains("\"delivered_by_node\": [200, 200, 200]"),
        "{json}"
    );
    assert!(
        number(&json, "cross_p99") >= number(&json, "cross_p50"),
        "{json}"
    );
    // Two PIDs (this process twice): the total is their sum, each one's share listed.
    let by_pid = json
        .split("\"server_cpu_ns_s_by_pid\": [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no server_cpu_ns_s_by_pid in {json}"));
    assert_eq!(by_pid.split(", ").count(), 2, "{json}");
    // One address: nothing crosses, and the cross-node figures are null rather than zero.
    let json = run_json(
        &srv,
        "fanout --addr ADDR --clients 4 --senders 2 --messages 10 --hello o{i} --json",
    )
    .await;
    assert_eq!(number(&json, "nodes"), 1.0, "{json}");
    assert!(json.contains("\"cross_node_delivered\": null"), "{json}");
    assert!(json.contains("\"cross_p50\": null"), "{json}");
    srv.stop().await;
}

#[tokio::test]
async fn idle_reports_the_servers_memory() {
    let srv = TestServer::start();
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
