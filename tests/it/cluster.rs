//! Several groupchatd nodes sharing their rooms over NATS JetStream (issue 14), as an operator runs
//! them: the real daemon binaries with a `[cluster]` table, Debian's `nats-server` (alone or three
//! as a JetStream cluster, see [`crate::nats`]), raw TCP clients spread over the nodes.
//!
//! Each test has NATS servers of its own and its own cluster `name`, so tests share nothing.
//! Presence is kept short (`presence_ttl_secs = 3`) so node loss is seen within seconds. Every wait
//! is bounded; the only repeated asking is of state that nothing announces (a heartbeat-fed
//! `chatctl nodes`), a short interval apart within a bound.
//!
//! Without `nats-server` these tests print a note and pass, unless `GROUPCHATD_REQUIRE_NATS=1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::nats::{self, NatsCluster, NatsServer};
use crate::process::{DAEMON, Daemon, Scratch, Serving, chatctl};
use crate::rooms::{is_date_line, unstamp, utc_minutes_now};
use crate::support::{HEAVY, WAIT};

/// `presence_ttl_secs` of every test node.
const TTL: u64 = 5;
/// Longest a node may take to get its link back after NATS returns (the client's reconnect
/// back-off included).
const RECONNECT: Duration = Duration::from_secs(30);

const LINK_LOST: &str = "*** cluster link lost; messages are not being delivered";
const NOT_SENT: &str = "*** cluster link lost; your line was not sent";
/// What a sender is told when the broker did not acknowledge its line (a server failing over).
const NOT_DELIVERED: &str = "*** your last line was not delivered";

/// A line telling the sender its last line did not go out.
fn refused(line: &str) -> bool {
    line == NOT_SENT || line.starts_with(NOT_DELIVERED)
}
const RESTORED: &str = "*** cluster link restored";
const NICK_UNCHECKED: &str =
    "*** cannot check nicknames across the cluster now (link lost); try again shortly";
const PROMPT: &str = "*** Choose a nickname:";

// ---- nodes -------------------------------------------------------------------------------------

/// The config of node `node` of cluster `cluster`: flood control off (tests send in bursts),
/// `top` (more top-level keys), then the `[cluster]` table.
fn node_config(cluster: &str, node: &str, urls: &[String], replicas: u32, top: &str) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "flood_burst = 0\n{top}\n[cluster]\nnats_urls = [{urls}]\nnode_name = \"{node}\"\n\
         name = \"{cluster}\"\npresence_ttl_secs = {TTL}\nreplicas = {replicas}\n"
    )
}

/// Starts node `node` and waits until it says its cluster link is up.
fn start_node(
    dir: &Scratch,
    cluster: &str,
    node: &str,
    urls: &[String],
    replicas: u32,
    top: &str,
) -> Daemon {
    // The link's debug lines too: a failing test prints every node's log.
    let d = Daemon::start_with(
        dir,
        node,
        &node_config(cluster, node, urls, replicas, top),
        |cmd| {
            cmd.env("RUST_LOG", "info,groupchatd::cluster=debug");
        },
    );
    let up = d.log_line("cluster link up");
    assert!(up.contains("cluster_link"), "event field: {up}");
    d
}

/// Nodes `a`, `b`, `c`… (`n` of them) on one NATS server.
fn start_nodes(
    dir: &Scratch,
    cluster: &str,
    nats: &NatsServer,
    n: usize,
    top: &str,
) -> Vec<Daemon> {
    ["a", "b", "c", "d"][..n]
        .iter()
        .map(|node| start_node(dir, cluster, node, &[nats.url()], 1, top))
        .collect()
}

// ---- clients -----------------------------------------------------------------------------------

/// A chat client whose lines a task of its own reads into a channel: a test can wait on several
/// clients at once (receiving from a channel can be cancelled; reading a socket line cannot).
struct Peer {
    nick: String,
    writer: OwnedWriteHalf,
    lines: mpsc::UnboundedReceiver<String>,
    reader: JoinHandle<()>,
}

impl Peer {
    /// Connects to `addr` (the nickname is not sent; `nick` names this client in failures).
    async fn connect(addr: SocketAddr, nick: &str) -> Peer {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect within the bound")
            .unwrap();
        let (r, writer) = stream.into_split();
        let (tx, lines) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(r);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    return;
                }
            }
        });
        Peer {
            nick: nick.to_owned(),
            writer,
            lines,
            reader,
        }
    }

    /// Connects to `addr` and joins as `nick`, consuming the welcome (and nothing after it).
    async fn join(addr: SocketAddr, nick: &str) -> Peer {
        let mut p = Peer::connect(addr, nick).await;
        p.until(PROMPT).await;
        p.send(nick).await;
        p.welcomed().await;
        p
    }

    /// Expects the welcome for this nickname, up to its last line.
    async fn welcomed(&mut self) {
        let welcome = self.next().await;
        assert!(
            welcome.starts_with(&format!("*** Welcome, {}!", self.nick)),
            "{}: welcome: {welcome:?}",
            self.nick
        );
        self.until("*** Type /help for commands.").await;
    }

    async fn send(&mut self, text: &str) {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line (without its CRLF) within `bound`: `Err` on timeout, `Ok(None)` at EOF.
    async fn next_within(&mut self, bound: Duration) -> Result<Option<String>, ()> {
        match timeout(bound, self.lines.recv()).await {
            Err(_) => Err(()),
            Ok(None) => Ok(None),
            Ok(Some(raw)) => Ok(Some(self.unframe(raw))),
        }
    }

    /// The next line from the channel, for `select!`: `None` at EOF.
    async fn recv(&mut self) -> Option<String> {
        let raw = self.lines.recv().await?;
        Some(self.unframe(raw))
    }

    fn unframe(&self, raw: String) -> String {
        match raw.strip_suffix("\r\n") {
            Some(l) => l.to_owned(),
            None => panic!("{}: server lines end in CRLF: {raw:?}", self.nick),
        }
    }

    /// The next line within [`WAIT`].
    async fn next(&mut self) -> String {
        match self.next_within(WAIT).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!("{}: connection closed", self.nick),
            Err(()) => panic!("{}: no line within {WAIT:?}", self.nick),
        }
    }

    async fn expect(&mut self, want: &str) {
        let got = self.next().await;
        assert_eq!(got, want, "{}", self.nick);
    }

    /// Skips lines until one equals `want`; returns the skipped ones.
    async fn until(&mut self, want: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let l = self.next().await;
            if l == want {
                return skipped;
            }
            skipped.push(l);
        }
    }

    /// Expects the server to close the connection within [`WAIT`]; returns the lines before.
    async fn closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.next_within(WAIT).await {
                Ok(Some(l)) => lines.push(l),
                Ok(None) => return lines,
                Err(()) => panic!("{}: not closed within {WAIT:?}; got {lines:?}", self.nick),
            }
        }
    }

    /// Asserts that nothing arrives before `deadline`.
    async fn silent_until(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(got) = self.next_within(left).await {
            panic!("{}: expected nothing more, got {got:?}", self.nick);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Proves `quiet` got nothing before a marker: `from` says it, and it is `quiet`'s next line.
async fn barrier(from: &mut Peer, quiet: &mut [&mut Peer], tag: &str) {
    let marker = format!("barrier-{tag}");
    from.send(&marker).await;
    for q in quiet {
        q.expect(&format!("<{}> {marker}", from.nick)).await;
    }
}

/// Reads a history replay that must hold exactly `lines` (as said live), oldest first, stamped
/// with times about now.
async fn expect_history(c: &mut Peer, room: &str, lines: &[&str]) {
    let what = match lines.len() {
        1 => "the last line".to_owned(),
        n => format!("the last {n} lines"),
    };
    c.expect(&format!("*** History of {room}: {what} (times UTC)"))
        .await;
    for want in lines {
        let mut got = c.next().await;
        if is_date_line(&got) {
            got = c.next().await; // said before midnight UTC, replayed after it
        }
        let (at, text) = unstamp(&got);
        assert_eq!(text, *want, "{}: history of {room}", c.nick);
        let skew = (utc_minutes_now() - at).rem_euclid(1440);
        assert!(skew <= 5, "stamp {at} min is not about now: {got:?}");
    }
    c.expect("*** End of history.").await;
}

/// `chatctl --socket SOCKET ARGS…` off the runtime's threads (it blocks).
async fn ctl(socket: &Path, args: &[&str]) -> crate::process::Ctl {
    let socket = socket.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chatctl(&socket, &args)
    })
    .await
    .unwrap()
}

// ---- one order everywhere ----------------------------------------------------------------------

/// `<cN> cN-K` (or, said with `/me`, `* cN cN-K`): a numbered line of the order test, as
/// (N, K).
fn numbered(line: &str) -> Option<(usize, usize)> {
    let (who, text) = match line.strip_prefix("<c") {
        Some(rest) => rest.split_once("> ")?,
        None => line.strip_prefix("* c")?.split_once(' ')?,
    };
    let (who2, k) = text.strip_prefix('c')?.split_once('-')?;
    (who == who2).then_some(())?;
    Some((who.parse().ok()?, k.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_line_once_in_one_order_everywhere() {
    if !nats::available("cluster order test") {
        return;
    }
    let _heavy = HEAVY.lock().await;
    const LINES: usize = 50;
    const CHATTERS: usize = 6;
    let dir = Scratch::new("cl-order");
    let nats = NatsServer::start(&dir);
    let nodes = start_nodes(&dir, "order", &nats, 3, "");
    let addrs: Vec<SocketAddr> = nodes.iter().map(Daemon::addr).collect();

    // A silent observer on each node, members before anyone else comes; then two chatters per node.
    let mut observers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        observers.push(Peer::join(*addr, &format!("obs{i}")).await);
    }
    let mut chatters = Vec::new();
    for i in 0..CHATTERS {
        chatters.push(Peer::join(addrs[i % 3], &format!("c{i}")).await);
    }

    // All six at once, 50 numbered lines each; each then reads until it has everyone else's.
    let start = Arc::new(tokio::sync::Barrier::new(CHATTERS));
    let tasks: Vec<JoinHandle<(Peer, Vec<String>, bool)>> = chatters
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                for k in 0..LINES {
                    let me = if k % 10 == 9 { "/me " } else { "" };
                    c.send(&format!("{me}c{i}-{k}")).await;
                }
                let mut heard = Vec::new();
                let mut announced = false;
                while heard.len() < (CHATTERS - 1) * LINES {
                    let l = c.next().await;
                    if numbered(&l).is_some() {
                        heard.push(l);
                    } else if l == "*** half time" {
                        announced = true;
                    }
                }
                (c, heard, announced)
            })
        })
        .collect();
    // Meanwhile notices: one joins on b, is renamed and quits; one on c is kicked from a; an
    // announcement from c. They take their places in the one order like the chat.
    let mut passer = Peer::join(addrs[1], "passer").await;
    let mut victim = Peer::join(addrs[2], "victim").await;
    passer.send("/nick passer2").await;
    passer.until("*** passer is now known as passer2").await;
    passer.send("/quit").await;
    passer.closed().await;
    let out = ctl(&nodes[0].socket, &["kick", "victim", "--reason", "test"]).await;
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    victim.closed().await;
    let out = ctl(&nodes[2].socket, &["announce", "half", "time"]).await;
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);

    let mut chatters = Vec::new();
    for t in tasks {
        chatters.push(t.await.expect("a chatter heard everyone"));
    }

    // c0 closes: its last line comes after every numbered line in the one order, so whatever a
    // client got before it is all it will get of them. It waits for the announcement first (which
    // node c may still be publishing), so that too comes before it.
    let (mut first, mut first_heard, announced) = chatters.remove(0);
    if !announced {
        let more = first.until("*** half time").await;
        first_heard.extend(more.into_iter().filter(|l| numbered(l).is_some()));
    }
    first.send("done").await;
    let mut heard_by = vec![("c0".to_owned(), first_heard)];
    for (mut c, mut heard, _) in chatters {
        let more = c.until("<c0> done").await;
        heard.extend(more.into_iter().filter(|l| numbered(l).is_some()));
        heard_by.push((c.nick.clone(), heard));
    }
    // c0 itself: nothing numbered arrived after its count was reached, up to a barrier (the
    // notices said meanwhile may).
    observers[0].send("barrier-c0").await;
    let more = first.until("<obs0> barrier-c0").await;
    assert!(
        more.iter().all(|l| numbered(l).is_none()),
        "c0 got more numbered lines: {more:?}"
    );

    let mut transcripts = Vec::new();
    for o in &mut observers {
        let all = o.until("<c0> done").await;
        let from = all
            .iter()
            .position(|l| l == "*** c0 joined")
            .unwrap_or_else(|| panic!("{} never saw c0 join: {all:?}", o.nick));
        transcripts.push(all[from..].to_vec());
    }

    // Every observer: the chatters' joins, then their 300 lines, each once, each chatter's in the
    // order said, and the notices of the passer, the victim and the announcement; nothing else.
    let reference = &transcripts[0];
    let mut notices: Vec<String> = (0..CHATTERS).map(|i| format!("*** c{i} joined")).collect();
    notices.extend(
        [
            "*** passer joined",
            "*** victim joined",
            "*** passer is now known as passer2",
            "*** passer2 left (quit)",
            "*** victim left (kicked: test)",
            "*** half time",
        ]
        .map(String::from),
    );
    let mut seen: Vec<&String> = reference.iter().filter(|l| l.starts_with("***")).collect();
    // The first nine were caused one after another; the quit, the kick and the announcement
    // may land in any order (the quit and the kick are told to the daemons at about once).
    assert_eq!(seen.len(), notices.len(), "notices: {seen:?}");
    seen[9..].sort();
    notices[9..].sort();
    assert_eq!(seen, notices.iter().collect::<Vec<_>>(), "notices");
    let mut next_k = [0usize; CHATTERS];
    for l in reference.iter().filter(|l| !l.starts_with("***")) {
        let (who, k) = numbered(l).unwrap_or_else(|| panic!("unexpected line {l:?}"));
        assert_eq!(
            k, next_k[who],
            "c{who}'s lines in the order said, once each: {l:?}"
        );
        next_k[who] += 1;
    }
    assert_eq!(next_k, [LINES; CHATTERS], "every line of every chatter");
    for (o, t) in observers.iter().zip(&transcripts).skip(1) {
        if t != reference {
            let at = t.iter().zip(reference).position(|(a, b)| a != b);
            panic!(
                "{} saw another order than obs0 (first difference at line {at:?}: {:?} vs {:?})",
                o.nick,
                at.map(|i| &t[i]),
                at.map(|i| &reference[i])
            );
        }
    }
    // Every chatter: everyone else's lines, once, in that same order.
    for (nick, heard) in &heard_by {
        let want: Vec<&String> = reference
            .iter()
            .filter(|l| numbered(l).is_some_and(|(who, _)| format!("c{who}") != *nick))
            .collect();
        assert_eq!(
            heard.iter().collect::<Vec<_>>(),
            want,
            "{nick} heard the others' lines once each, in the one order"
        );
    }
    eprintln!(
        "cluster order: {} lines through 3 nodes, the same {}-line transcript on every node",
        CHATTERS * LINES,
        reference.len()
    );
}

// ---- nicknames ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nickname_claimed_on_two_nodes_at_once_goes_to_exactly_one() {
    if !nats::available("cluster nickname race") {
        return;
    }
    let dir = Scratch::new("cl-race");
    let nats = NatsServer::start(&dir);
    let nodes = start_nodes(&dir, "race", &nats, 2, "");
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let mut keep = Vec::new();
    for round in 0..6 {
        // Short, so that /who's twelve names fit in one line (notices are wrapped at 80).
        let nick = format!("r{round}");
        // Alternate which node's client is written to first.
        let (first, second) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let mut x = Peer::connect(first, &nick).await;
        let mut y = Peer::connect(second, &nick).await;
        x.until(PROMPT).await;
        y.until(PROMPT).await;
        // Both nicknames written together (one task writing both, no await between them that
        // waits on the daemons).
        tokio::join!(x.send(&nick), y.send(&nick));
        let (lx, ly) = tokio::join!(x.next(), y.next());
        let welcome = format!("*** Welcome, {nick}!");
        let (mut winner, mut loser, refusal) =
            match (lx.starts_with(&welcome), ly.starts_with(&welcome)) {
                (true, false) => (x, y, ly),
                (false, true) => (y, x, lx),
                _ => panic!(
                    "round {round}: exactly one of two claims of {nick} wins; got {lx:?} and {ly:?}"
                ),
            };
        assert_eq!(refusal, "*** that nickname is taken", "round {round}");
        loser.expect(PROMPT).await;
        winner.until("*** Type /help for commands.").await;
        // The loser takes another name; the winner sees it come in.
        loser.nick = format!("{nick}b");
        let other = loser.nick.clone();
        loser.send(&other).await;
        loser.welcomed().await;
        winner.until(&format!("*** {other} joined")).await;
        keep.push(winner);
        keep.push(loser);
    }
    // Twelve members, each name once, seen alike from both nodes.
    let mut names: Vec<String> = (0..6)
        .flat_map(|r| [format!("r{r}"), format!("r{r}b")])
        .collect();
    names.sort();
    let want = format!("*** 12 online: {}", names.join(", "));
    for p in keep.iter_mut().take(2) {
        p.send("/who").await;
        let got = p.until_prefix("*** 12 online").await;
        assert_eq!(got, want);
    }
}

impl Peer {
    /// Skips lines until one starting with `prefix`; returns it.
    async fn until_prefix(&mut self, prefix: &str) -> String {
        loop {
            let l = self.next().await;
            if l.starts_with(prefix) {
                return l;
            }
        }
    }
}

// ---- history, /who, /msg, /nick ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_join_has_lines_said_on_other_nodes_and_before_the_node_started() {
    if !nats::available("cluster history test") {
        return;
    }
    let dir = Scratch::new("cl-hist");
    let nats = NatsServer::start(&dir);
    let top = "history_lines = 3";
    let nodes = start_nodes(&dir, "hist", &nats, 2, top);
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut carol = Peer::join(nodes[0].addr(), "carol").await;
    alice.expect("*** carol joined").await;
    alice.send("one").await;
    alice.send("/me two").await;
    // Carol got them back from the stream: they are in it.
    carol.expect("<alice> one").await;
    carol.expect("* alice two").await;

    // Bob joins on the other node: the lines said on the first are his history.
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    expect_history(&mut bob, "#lobby", &["<alice> one", "* alice two"]).await;
    alice.expect("*** bob joined").await;
    carol.expect("*** bob joined").await;
    bob.send("three").await;
    alice.expect("<bob> three").await;
    alice.send("four").await;
    bob.expect("<alice> four").await;
    carol.expect("<bob> three").await;
    carol.expect("<alice> four").await;

    // A node started after all that: dave's history there is the last three (history_lines).
    let c = start_node(&dir, "hist", "c", &[nats.url()], 1, top);
    let mut dave = Peer::join(c.addr(), "dave").await;
    expect_history(
        &mut dave,
        "#lobby",
        &["* alice two", "<bob> three", "<alice> four"],
    )
    .await;
    for p in [&mut alice, &mut bob, &mut carol] {
        p.expect("*** dave joined").await;
    }
    dave.send("five").await;
    for p in [&mut alice, &mut bob, &mut carol] {
        p.expect("<dave> five").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_msg_and_nick_reach_across_nodes() {
    if !nats::available("cluster /who /msg /nick test") {
        return;
    }
    let dir = Scratch::new("cl-who");
    let nats = NatsServer::start(&dir);
    let nodes = start_nodes(&dir, "who", &nats, 2, "");
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    let mut carol = Peer::join(nodes[1].addr(), "carol").await;
    alice.expect("*** bob joined").await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol joined").await;

    for p in [&mut alice, &mut carol] {
        p.send("/who").await;
        p.expect("*** 3 online: alice, bob, carol").await;
    }

    // A private line from one node to the other, and back; nobody else sees either.
    alice.send("/msg bob psst").await;
    alice.expect("*** -> *bob* psst").await;
    bob.expect("*alice* psst").await;
    bob.send("/msg ALICE back").await;
    bob.expect("*** -> *alice* back").await;
    alice.expect("*bob* back").await;
    barrier(&mut bob, &mut [&mut alice, &mut carol], "after-msg").await;
    alice.send("/msg nobody hello").await;
    alice.expect("*** No such nickname: nobody").await;

    // Nicknames are one namespace: a name held on the other node cannot be taken by /nick…
    bob.send("/nick Alice").await;
    bob.expect("*** Cannot change nickname: that nickname is taken")
        .await;
    // …a rename is seen everywhere and frees the old name everywhere.
    carol.send("/nick caroline").await;
    for p in [&mut alice, &mut bob, &mut carol] {
        p.expect("*** carol is now known as caroline").await;
    }
    alice.send("/who").await;
    alice.expect("*** 3 online: alice, bob, caroline").await;
    let mut x = Peer::connect(nodes[0].addr(), "carol").await;
    x.until(PROMPT).await;
    x.send("Caroline").await;
    x.expect("*** that nickname is taken").await;
    x.expect(PROMPT).await;
    x.send("carol").await;
    x.welcomed().await;
    for p in [&mut alice, &mut bob] {
        p.expect("*** carol joined").await;
    }
    // The renamed member gets private lines under the new name, across nodes.
    alice.send("/msg caroline hi").await;
    alice.expect("*** -> *caroline* hi").await;
    carol.until("*alice* hi").await;

    // A connection closed is a leave everywhere.
    drop(bob);
    for p in [&mut alice, &mut carol, &mut x] {
        p.until("*** bob left (connection closed)").await;
    }
    alice.send("/who").await;
    alice.expect("*** 3 online: alice, carol, caroline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_set_on_one_node_is_the_topic_on_every_node() {
    if !nats::available("cluster topic test") {
        return;
    }
    let dir = Scratch::new("cl-topic");
    let nats = NatsServer::start(&dir);
    let nodes = start_nodes(&dir, "topic", &nats, 2, "");
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    alice.expect("*** bob joined").await;
    // (Bob's first lines are checked in who_msg_and_nick_reach_across_nodes.)
    alice.send("hi").await;
    bob.until("<alice> hi").await;

    alice.send("/topic Cluster talk").await;
    alice.expect("*** alice set the topic: Cluster talk").await;
    bob.expect("*** alice set the topic: Cluster talk").await;
    bob.send("/topic").await;
    bob.expect("*** Topic of #lobby: Cluster talk").await;
    // A newcomer on the other node is welcomed with it.
    let mut carol = Peer::connect(nodes[1].addr(), "carol").await;
    carol.until(PROMPT).await;
    carol.send("carol").await;
    let welcome = carol.next().await;
    assert!(welcome.starts_with("*** Welcome, carol!"), "{welcome}");
    carol.expect("*** Topic: Cluster talk").await;
    carol.expect("*** Type /help for commands.").await;
}

// ---- failures ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_members_leave_once_and_their_nicknames_free_up() {
    if !nats::available("cluster node-loss test") {
        return;
    }
    // Timed: the notice must come within the presence TTL, so nothing heavy runs beside it.
    let _heavy = HEAVY.lock().await;
    let dir = Scratch::new("cl-kill");
    let nats = NatsServer::start(&dir);
    let mut nodes = start_nodes(&dir, "kill", &nats, 3, "");
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    let mut carol = Peer::join(nodes[2].addr(), "carol").await;
    alice.expect("*** bob joined").await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol joined").await;
    bob.send("still here").await;
    alice.expect("<bob> still here").await;
    carol.expect("<bob> still here").await;

    nodes[1].signal(Signal::SIGKILL);
    let killed = Instant::now();
    let code = nodes[1].wait_exit(WAIT);
    assert_eq!(code, -1, "killed by the signal");
    let bound = Duration::from_secs(TTL + 3);
    let deadline = killed + bound;
    for p in [&mut alice, &mut carol] {
        let got = p
            .next_within(deadline.saturating_duration_since(Instant::now()))
            .await;
        assert_eq!(
            got,
            Ok(Some("*** bob left (node lost)".to_owned())),
            "{} within {bound:?} of the SIGKILL",
            p.nick
        );
        eprintln!("{} saw bob lost after {:?}", p.nick, killed.elapsed());
    }
    // Once: nothing more for the rest of that time.
    for p in [&mut alice, &mut carol] {
        p.silent_until(deadline).await;
    }
    assert!(bob.closed().await.is_empty(), "bob's node is gone");

    alice.send("/who").await;
    alice.expect("*** 2 online: alice, carol").await;
    // The name is free again, on another node.
    let mut bob2 = Peer::join(nodes[2].addr(), "bob").await;
    expect_history(&mut bob2, "#lobby", &["<bob> still here"]).await;
    alice.expect("*** bob joined").await;
    carol.expect("*** bob joined").await;
    bob2.send("back").await;
    alice.expect("<bob> back").await;
    carol.expect("<bob> back").await;

    // The node restarted rejoins: its members are seen by the others again.
    let b = start_node(&dir, "kill", "b", &[nats.url()], 1, "");
    let mut dave = Peer::join(b.addr(), "dave").await;
    for p in [&mut alice, &mut carol, &mut bob2] {
        p.expect("*** dave joined").await;
    }
    dave.send("hi").await;
    for p in [&mut alice, &mut carol, &mut bob2] {
        p.expect("<dave> hi").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_s_members_leave_once_at_once_and_free_their_nicknames() {
    if !nats::available("cluster graceful stop test") {
        return;
    }
    let dir = Scratch::new("cl-stop");
    let nats = NatsServer::start(&dir);
    let mut nodes = start_nodes(&dir, "stop", &nats, 2, "");
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    alice.expect("*** bob joined").await;
    // (Bob's first lines are checked elsewhere: who_msg_and_nick_reach_across_nodes.)
    alice.send("hi").await;
    bob.until("<alice> hi").await;

    nodes[1].signal(Signal::SIGTERM);
    assert_eq!(bob.closed().await, ["*** server shutting down"]);
    let left = alice.next().await;
    assert!(
        left.starts_with("*** bob left (") && left != "*** bob left (node lost)",
        "a stopping node says its members left: {left:?}"
    );
    assert_eq!(nodes[1].wait_exit(WAIT), 0);
    // The name is free at once (not only when the claim would have expired)…
    let mut bob2 = Peer::join(nodes[0].addr(), "bob").await;
    expect_history(&mut bob2, "#lobby", &["<alice> hi"]).await;
    alice.expect("*** bob joined").await;
    // …and the node is not lost later on top of it.
    alice
        .silent_until(Instant::now() + Duration::from_secs(TTL + 2))
        .await;
    bob2.send("/who").await;
    bob2.expect("*** 2 online: alice, bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_chat_tells_clients_refuses_lines_and_resumes_without_loss_or_repeats() {
    if !nats::available("cluster NATS restart test") {
        return;
    }
    let dir = Scratch::new("cl-natsre");
    let mut nats = NatsServer::start(&dir);
    let nodes = start_nodes(&dir, "natsre", &nats, 2, "");
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut carol = Peer::join(nodes[0].addr(), "carol").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    alice.expect("*** carol joined").await;
    alice.expect("*** bob joined").await;
    carol.expect("*** bob joined").await;
    for i in 0..5 {
        alice.send(&format!("before{i}")).await;
    }
    for i in 0..5 {
        bob.expect(&format!("<alice> before{i}")).await;
        carol.expect(&format!("<alice> before{i}")).await;
    }

    nats.stop();
    // Every client of every node is told, once.
    for p in [&mut alice, &mut carol, &mut bob] {
        p.expect(LINK_LOST).await;
    }
    nodes[0].log_line("cluster link lost");
    // A line said now is refused to its sender, not delivered anywhere (checked below: the next
    // line everyone gets is the one said after the link is back).
    alice.send("during the outage").await;
    alice.expect(NOT_SENT).await;
    bob.send("during the outage too").await;
    bob.expect(NOT_SENT).await;
    // A nickname cannot be checked now.
    let mut dave = Peer::connect(nodes[0].addr(), "dave").await;
    dave.until(PROMPT).await;
    dave.send("dave").await;
    dave.expect(NICK_UNCHECKED).await;
    dave.expect(PROMPT).await;

    nats.restart();
    for p in [&mut alice, &mut carol, &mut bob] {
        match p.next_within(RECONNECT).await {
            Ok(Some(l)) => assert_eq!(l, RESTORED, "{}", p.nick),
            other => panic!(
                "{}: no {RESTORED:?} within {RECONNECT:?}: {other:?}",
                p.nick
            ),
        }
    }
    dave.send("dave").await;
    dave.welcomed().await;
    // What was said before the outage, and not the refused lines.
    let before: Vec<String> = (0..5).map(|i| format!("<alice> before{i}")).collect();
    let before: Vec<&str> = before.iter().map(String::as_str).collect();
    expect_history(&mut dave, "#lobby", &before).await;
    for p in [&mut alice, &mut carol, &mut bob] {
        p.expect("*** dave joined").await;
    }
    // Chat goes on: each line once, nothing from before repeated, nothing refused delivered.
    for i in 0..5 {
        alice.send(&format!("after{i}")).await;
        bob.send(&format!("bob after{i}")).await;
    }
    let want_for = |nick: &str| -> Vec<String> {
        let mut want = Vec::new();
        if nick != "alice" {
            want.extend((0..5).map(|i| format!("<alice> after{i}")));
        }
        if nick != "bob" {
            want.extend((0..5).map(|i| format!("<bob> bob after{i}")));
        }
        want
    };
    for p in [&mut alice, &mut carol, &mut bob, &mut dave] {
        let want = want_for(&p.nick);
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(p.next().await);
        }
        // Alice's and bob's lines interleave in one order; each one's stay in theirs.
        let mut sorted_got = got.clone();
        sorted_got.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        assert_eq!(sorted_got, sorted_want, "{}: {got:?}", p.nick);
        for who in ["<alice>", "<bob>"] {
            let mine: Vec<&String> = got.iter().filter(|l| l.starts_with(who)).collect();
            let mut ordered = mine.clone();
            ordered.sort();
            assert_eq!(mine, ordered, "{}: {who}'s lines in order", p.nick);
        }
    }
    barrier(&mut dave, &mut [&mut alice, &mut carol, &mut bob], "end").await;
}

/// The stream and buckets of cluster `name` (see the spec's JetStream layout).
fn stored_as(name: &str) -> [String; 3] {
    [
        format!("{name}_rooms"),
        format!("KV_{name}_nicks"),
        format!("KV_{name}_nodes"),
    ]
}

/// What became of one sender's lines.
#[derive(Default)]
struct Fate {
    accepted: Vec<String>,
    refused: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_loses_nothing_when_a_nats_server_dies_mid_chat() {
    if !nats::available("cluster R3 test") {
        return;
    }
    let _heavy = HEAVY.lock().await;
    const LINES: usize = 40;
    /// Lines accepted (of all senders) before one server is killed.
    const KILL_AFTER: usize = 30;
    let dir = Scratch::new("cl-r3");
    let mut nats = NatsCluster::start(&dir, 3);
    let urls = nats.urls();
    // Each node lists the servers from a different one.
    let nodes: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut mine = urls.clone();
            mine.rotate_left(i);
            start_node(&dir, "r3", node, &mine, 3, "")
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Daemon::addr).collect();
    let mut observers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        observers.push(Peer::join(*addr, &format!("o{i}")).await);
    }
    let mut senders = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        senders.push(Peer::join(*addr, &format!("s{i}")).await);
    }
    // Three replicas of the stream and both buckets, as configured.
    let port = nats.any_running().port();
    for stream in stored_as("r3") {
        let info = nats::request_json(port, &format!("$JS.API.STREAM.INFO.{stream}"), "");
        assert_eq!(info["config"]["num_replicas"], 3, "{stream}: {info}");
    }
    let info = nats::request_json(port, "$JS.API.STREAM.INFO.r3_rooms", "");
    let leader = info["cluster"]["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("the stream has a leader: {info}"))
        .to_owned();

    // One driver per node: its sender says a line, then waits for its fate (the line back
    // through the node's observer, or the refusal to the sender); meanwhile the observer's whole
    // transcript is kept. One line in flight per sender, three senders at once.
    let (progress_tx, mut progress) = mpsc::unbounded_channel::<()>();
    let drivers: Vec<JoinHandle<(Peer, Vec<String>, Fate)>> = senders
        .into_iter()
        .zip(observers)
        .enumerate()
        .map(|(i, (mut sender, mut observer))| {
            let progress = progress_tx.clone();
            tokio::spawn(async move {
                let mut transcript = Vec::new();
                let mut fate = Fate::default();
                let texts = (0..LINES)
                    .map(|k| format!("s{i}-{k}"))
                    .chain((0..20).map(|_| format!("s{i}-end")));
                for text in texts {
                    let end = text.ends_with("-end");
                    sender.send(&text).await;
                    let want = format!("<s{i}> {text}");
                    let (accepted, link_lost) = timeout(RECONNECT, async {
                        loop {
                            tokio::select! {
                                l = observer.recv() => {
                                    let l = l.expect("observer connected");
                                    let mine = l == want;
                                    transcript.push(l);
                                    if mine { return (true, false); }
                                }
                                l = sender.recv() => {
                                    let l = l.expect("sender connected");
                                    if refused(&l) { return (false, l == NOT_SENT); }
                                }
                            }
                        }
                    })
                    .await
                    .unwrap_or_else(|_| {
                        panic!("s{i}: {text:?} neither delivered nor refused within {RECONNECT:?}")
                    });
                    if link_lost {
                        // As a person would: say it again once the node says its link is back
                        // (the observer's lines are kept meanwhile).
                        timeout(RECONNECT, async {
                            loop {
                                tokio::select! {
                                    l = observer.recv() => transcript.push(l.expect("observer connected")),
                                    l = sender.recv() => {
                                        if l.expect("sender connected") == RESTORED { return; }
                                    }
                                }
                            }
                        })
                        .await
                        .unwrap_or_else(|_| panic!("s{i}: link not restored within {RECONNECT:?}"));
                    }
                    if accepted {
                        fate.accepted.push(text);
                        let _ = progress.send(());
                        if end {
                            return (observer, transcript, fate);
                        }
                    } else {
                        fate.refused.push(text);
                    }
                }
                panic!(
                    "s{i}: the end marker was refused 20 times: {:?}",
                    fate.refused
                );
            })
        })
        .collect();
    drop(progress_tx);

    for _ in 0..KILL_AFTER {
        timeout(RECONNECT, progress.recv())
            .await
            .expect("lines accepted before the kill")
            .expect("drivers running");
    }
    // The stream's leader: the replica whose loss forces an election.
    let killed = nats.by_name(&leader).pid();
    nats.by_name(&leader).kill();
    eprintln!("killed nats-server {leader} (pid {killed:?}) after {KILL_AFTER} accepted lines");

    let mut results = Vec::new();
    for d in drivers {
        match d.await {
            Ok(r) => results.push(r),
            Err(e) => {
                for n in &nodes {
                    eprintln!("log of node at {}: {:#?}", n.addr(), n.take_log());
                }
                for (name, log) in nats.take_logs() {
                    eprintln!("log of nats-server {name}: {log:#?}");
                }
                panic!("a driver failed: {e}");
            }
        }
    }
    // Each observer reads on until it has every sender's end marker.
    let ends: Vec<String> = (0..3).map(|i| format!("<s{i}> s{i}-end")).collect();
    for (observer, transcript, _) in &mut results {
        while !ends.iter().all(|e| transcript.contains(e)) {
            let l = observer.next().await;
            transcript.push(l);
        }
    }

    // The chat lines every observer saw: the same, in the same order…
    let chat = |t: &Vec<String>| -> Vec<String> {
        t.iter().filter(|l| l.starts_with("<s")).cloned().collect()
    };
    let reference = chat(&results[0].1);
    for (o, t, _) in &results[1..] {
        assert_eq!(chat(t), reference, "{} saw another order than o0", o.nick);
    }
    // …each once, and exactly the lines accepted: none lost, none refused yet delivered.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for l in &reference {
        *count.entry(l.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for (i, (_, _, fate)) in results.iter().enumerate() {
        for t in &fate.accepted {
            accepted.insert(format!("<s{i}> {t}"));
        }
        for t in &fate.refused {
            let line = format!("<s{i}> {t}");
            // (An end marker is resent with the same text: one of them is accepted.)
            if !t.ends_with("-end") {
                assert!(
                    !count.contains_key(line.as_str()),
                    "refused but delivered: {line}"
                );
            }
        }
        refused += fate.refused.len();
    }
    let delivered: HashSet<String> = reference.iter().cloned().collect();
    assert_eq!(delivered, accepted, "delivered = accepted");
    // Each sender's lines in the order said.
    for i in 0..3 {
        let mine: Vec<usize> = reference
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("<s{i}> s{i}-")))
            .filter_map(|k| k.parse().ok())
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "s{i}: {mine:?}");
    }
    eprintln!(
        "R3 with nats-server {leader} killed: {} lines delivered once on every node, {refused} refused",
        reference.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatctl_upgrade_keeps_a_node_s_clients_claims_and_place_in_the_stream() {
    if !nats::available("cluster upgrade test") {
        return;
    }
    let dir = Scratch::new("cl-upg");
    let nats = NatsServer::start(&dir);
    let mut nodes = start_nodes(&dir, "upg", &nats, 2, "");
    let old = Serving::of(&nodes[0].socket);
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut carol = Peer::join(nodes[0].addr(), "carol").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    alice.expect("*** carol joined").await;
    alice.expect("*** bob joined").await;
    carol.expect("*** bob joined").await;

    // Bob talks on node b while node a hands its clients to a new process: a's members get
    // every line once, in order, and no leave or join.
    const LINES: usize = 40;
    for k in 0..LINES / 2 {
        bob.send(&format!("l{k}")).await;
    }
    let talk = tokio::spawn(async move {
        for k in LINES / 2..LINES {
            bob.send(&format!("l{k}")).await;
        }
        bob
    });
    let out = ctl(&nodes[0].socket, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    std::mem::forget(old); // handed over: the process that served is gone
    let mut serving = Serving::of(&nodes[0].socket);
    let mut bob = talk.await.unwrap();
    for p in [&mut alice, &mut carol] {
        for k in 0..LINES {
            p.expect(&format!("<bob> l{k}")).await;
        }
    }
    // The new process keeps the claims and the heartbeat: for longer than the presence TTL
    // nobody on b is told of a loss, and alice's name stays hers.
    let quiet = Instant::now() + Duration::from_secs(TTL + 2);
    let mut x = Peer::connect(nodes[1].addr(), "alice").await;
    x.until(PROMPT).await;
    x.send("alice").await;
    x.expect("*** that nickname is taken").await;
    x.expect(PROMPT).await;
    bob.silent_until(quiet).await;
    alice.send("after the upgrade").await;
    bob.expect("<alice> after the upgrade").await;
    carol.expect("<alice> after the upgrade").await;
    bob.send("/who").await;
    bob.expect("*** 3 online: alice, bob, carol").await;
    assert_eq!(serving.stop(&mut nodes[0]), 0);
}

// ---- the operator's view -------------------------------------------------------------------------

/// `chatctl nodes --json`'s list of nodes (the result, or its `nodes` field).
fn nodes_of(reply: &serde_json::Value) -> Vec<serde_json::Value> {
    let result = &reply["result"];
    result
        .as_array()
        .or_else(|| result["nodes"].as_array())
        .unwrap_or_else(|| panic!("no list of nodes in {reply}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatctl_sees_kicks_and_announces_across_the_cluster() {
    if !nats::available("cluster chatctl test") {
        return;
    }
    let dir = Scratch::new("cl-ctl");
    let nats = NatsServer::start(&dir);
    let nodes = start_nodes(&dir, "ctl", &nats, 3, "");
    let mut alice = Peer::join(nodes[0].addr(), "alice").await;
    let mut bob = Peer::join(nodes[1].addr(), "bob").await;
    let mut carol = Peer::join(nodes[2].addr(), "carol").await;
    alice.expect("*** bob joined").await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol joined").await;
    alice.send("hello").await;
    bob.expect("<alice> hello").await;
    carol.expect("<alice> hello").await;

    // `nodes`: all three, link up, one client each, this one marked. The client counts come with
    // heartbeats (every TTL/3), so this is asked again, a short interval apart, within a bound.
    let socket = &nodes[0].socket;
    let deadline = Instant::now() + Duration::from_secs(TTL) + WAIT;
    let listed = loop {
        let out = ctl(socket, &["--json", "nodes"]).await;
        assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
        let mut listed = nodes_of(&out.json());
        listed.sort_by_key(|n| n["node"].as_str().unwrap_or("").to_owned());
        let settled = listed.len() == 3 && listed.iter().all(|n| n["clients"] == 1);
        if settled || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = listed.iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "{listed:?}");
    for n in &listed {
        assert_eq!(n["link"], "up", "{n}");
        assert_eq!(n["clients"], 1, "{n}");
        assert_eq!(n["self"], n["node"] == "a", "{n}");
        let age = n["heartbeat_age_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("{n}"));
        assert!(
            age <= (TTL + 2) * 1000,
            "a live node's heartbeat is recent: {n}"
        );
    }
    let table = ctl(socket, &["nodes"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let head = table.stdout.lines().next().unwrap_or("");
    for col in ["NODE", "CLIENTS", "LAST-HEARTBEAT", "LINK"] {
        assert!(head.contains(col), "{col} in {head:?}");
    }
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);

    // `list --cluster`: every member with its node.
    let out = ctl(socket, &["--json", "list", "--cluster"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json = out.json();
    let members: BTreeMap<String, String> = json["result"]["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .map(|c| {
            (
                c["nick"].as_str().unwrap().to_owned(),
                c["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [("alice", "a"), ("bob", "b"), ("carol", "c")]
        .iter()
        .map(|(n, node)| (n.to_string(), node.to_string()))
        .collect();
    assert_eq!(members, want, "{json}");
    let table = ctl(socket, &["list", "--cluster"]).await;
    assert!(
        table.stdout.lines().next().unwrap_or("").contains("NODE"),
        "{}",
        table.stdout
    );
    // Without --cluster, this node's own clients, as before.
    let local = ctl(socket, &["--json", "list"]).await.json();
    let local: Vec<&str> = local["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["nick"].as_str())
        .collect();
    assert_eq!(local, ["alice"]);

    // `announce` on one node reaches the room on every node.
    let out = ctl(&nodes[2].socket, &["announce", "maintenance", "at", "noon"]).await;
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    for p in [&mut alice, &mut bob, &mut carol] {
        p.expect("*** maintenance at noon").await;
    }

    // `kick` on node a finds bob on node b.
    let out = ctl(socket, &["kick", "BOB", "--reason", "spam"]).await;
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("bob"), "{}", out.stdout);
    assert_eq!(bob.closed().await, ["*** you were kicked: spam"]);
    alice.expect("*** bob left (kicked: spam)").await;
    carol.expect("*** bob left (kicked: spam)").await;
    let out = ctl(socket, &["kick", "nobody"]).await;
    assert_eq!(
        out.code, 1,
        "an unknown nickname is refused: {}",
        out.stdout
    );

    // `stats`: the link, the broker's round trip, and the counters (alice's line, the joins…).
    let stats = ctl(socket, &["--json", "stats"]).await.json();
    let cluster = &stats["result"]["cluster"];
    assert_eq!(cluster["link"], "up", "{stats}");
    assert!(cluster["rtt_ms"].as_f64().is_some(), "{stats}");
    let published = cluster["published"].as_u64().expect("published");
    let acked = cluster["acked"].as_u64().expect("acked");
    assert!(
        published >= 1 && acked >= 1 && acked <= published,
        "{cluster}"
    );
    assert_eq!(cluster["errors"], 0, "{cluster}");
    let human = ctl(socket, &["stats"]).await;
    let link = human
        .stdout
        .lines()
        .find(|l| l.starts_with("cluster link"))
        .unwrap_or_else(|| panic!("a cluster link row: {}", human.stdout));
    assert!(link.contains("up"), "{link}");
    assert!(human.stdout.contains("broker rtt"), "{}", human.stdout);
}

// ---- configuration -------------------------------------------------------------------------------

/// `groupchatd --check-config --config FILE` → (exit code, stdout + stderr).
fn check_config(dir: &Scratch, text: &str) -> (i32, String) {
    let path = dir.file("check.toml", text);
    let out = Command::new(DAEMON)
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn cluster_table_is_checked_key_by_key() {
    // No NATS needed: a check reads the file only.
    let dir = Scratch::new("cl-cfg");
    let good = "[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\", \"tls://n2.example:4222\"]\n\
                node_name = \"node-1\"\nname = \"chat_2\"\npresence_ttl_secs = 2\nreplicas = 3\n";
    let (code, out) = check_config(&dir, good);
    assert_eq!(code, 0, "{out}");
    let bad = [
        ("[cluster]\nnode_name = \"a\"\n", "nats_urls"),
        ("[cluster]\nnats_urls = []\n", "nats_urls"),
        ("[cluster]\nnats_urls = [\"http://x:1\"]\n", "nats_urls"),
        (
            "[cluster]\nnats_urls = [\"nats://x:1\"]\nnode_name = \"a.b\"\n",
            "node_name",
        ),
        (
            "[cluster]\nnats_urls = [\"nats://x:1\"]\nname = \"g*\"\n",
            "name",
        ),
        (
            "[cluster]\nnats_urls = [\"nats://x:1\"]\npresence_ttl_secs = 1\n",
            "presence_ttl_secs",
        ),
        (
            "[cluster]\nnats_urls = [\"nats://x:1\"]\nreplicas = 6\n",
            "replicas",
        ),
        (
            "[cluster]\nnats_urls = [\"nats://x:1\"]\nnode = \"a\"\n",
            "node",
        ),
    ];
    for (text, key) in bad {
        let (code, out) = check_config(&dir, text);
        assert_eq!(code, 78, "{text:?}: {out}");
        assert!(out.contains(key), "{text:?}: the error names {key}: {out}");
    }
}
