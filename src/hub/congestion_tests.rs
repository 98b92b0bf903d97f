//! Hub unit tests: a reader that falls behind is counted as congested, and one whose queue
//! overflows is cut off alone, announced once.

use super::*;

/// Publishes 1000-byte lines from `from` until `gone` has left the room (bounded); `reader`
/// keeps up meanwhile. Returns the lines published and all `reader` received.
fn publish_until_gone(h: &Arc<Hub>, from: &Conn, gone: &str, reader: &mut Conn) -> (usize, String) {
    let mut seen = Vec::new();
    for round in 0..2000 {
        if h.resolve(gone).is_none() {
            return (round, String::from_utf8(seen).unwrap());
        }
        say(h, from.id(), kilo_line(), 1);
        reader.far.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = reader.far.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        reader.far.set_nonblocking(false).unwrap();
    }
    panic!("{gone} was never cut off");
}

#[tokio::test]
async fn a_full_queue_cuts_off_that_client_alone_and_announces_it_once() {
    let h = Arc::new(Hub::new(Config {
        max_queue_bytes: 8192,
        ..Config::default()
    }));
    let mut a = member(&h, "a", 1);
    let mut b = member(&h, "b", 2);
    let slow = connect_at(&h, 3, true).unwrap();
    h.join(slow.id(), "slow").unwrap();
    a.read_until("*** slow joined\r\n");
    b.read_until("*** slow joined\r\n");
    let (rounds, seen) = publish_until_gone(&h, &a, "slow", &mut b);
    assert!(rounds > 8, "cut off only once far behind ({rounds} lines)");
    assert!(slow.client.outbox.is_closing());
    assert!(
        matches!(
            slow.flush(),
            Flushed::Done(Close::Abort(LeaveReason::QueueFull))
        ),
        "abort: nothing more is written"
    );
    let left = "*** slow left (too slow: send queue full)\r\n";
    a.expect(left);
    if !seen.ends_with(left) {
        b.read_until(left);
    }
    assert_eq!(
        h.close(slow.id(), LeaveReason::Closed, None),
        None,
        "gone already: nothing happens"
    );
    a.quiet();
    b.quiet();
    assert_eq!(h.counters.slow_drops.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn congestion_is_counted_while_a_queue_is_over_half_full() {
    let h = Arc::new(Hub::new(Config {
        max_queue_bytes: 64 * 1024,
        ..Config::default()
    }));
    let a = member(&h, "a", 1);
    let mut b = connect_at(&h, 2, true).unwrap();
    h.join(b.id(), "b").unwrap();
    assert!(
        publish_until_congested(&h, &a),
        "b fell more than half its queue behind"
    );
    assert_eq!(h.congested_count(), 1);
    assert!(
        b.client.outbox.is_parked(),
        "b's session owns its full socket"
    );
    // b reads everything; its session writes the rest as the socket drains, and b is relieved.
    b.far
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..1000 {
        let room = h.room_of(b.id()).unwrap();
        let limits = room.limits(room.log_end(), 64 * 1024);
        let done = b.client.flush_own(limits) == Flushed::Idle;
        if done && h.congested_count() == 0 {
            break;
        }
        let _ = b.far.read(&mut buf);
    }
    assert_eq!(h.congested_count(), 0);
    // Closing while congested also clears it.
    assert!(publish_until_congested(&h, &a));
    assert_eq!(h.congested_count(), 1);
    h.close(b.id(), LeaveReason::Closed, None);
    assert_eq!(h.congested_count(), 0);
}
