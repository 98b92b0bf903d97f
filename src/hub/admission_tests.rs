//! Hub unit tests: who may connect (client caps, per-network limits and connect rates, their
//! exemptions) and how a reload that changes the limits keeps the counts right.

use super::*;

#[tokio::test]
async fn admission_limits_and_exemptions() {
    let h = Arc::new(Hub::new(Config {
        max_clients: 2,
        max_clients_per_ip: 1,
        ..Config::default()
    }));
    let first = connect(&h, 1);
    assert_eq!(connect_at(&h, 1, false).err(), Some(Refusal::PerIp));
    let (near, _far) = sockets(false);
    let lo = SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(h.register(lo, near).is_ok(), "loopback is exempt");
    assert_eq!(connect_at(&h, 2, false).err(), Some(Refusal::Full));
    h.close(first.id(), LeaveReason::Closed, None);
    assert!(
        connect_at(&h, 1, false).is_ok(),
        "a slot and the address's count were released"
    );
    assert_eq!(h.counters.rejected.load(Ordering::Relaxed), 2);
}

/// Registers a connection that appears to come from `peer` (the socket itself is loopback).
fn register_as(hub: &Hub, peer: &str) -> Result<Arc<Client>, Refusal> {
    let (near, _far) = sockets(false);
    let peer: SocketAddr = peer.parse().unwrap();
    hub.register(peer, near).map_err(|(why, _)| why)
}

#[tokio::test]
async fn per_ip_limit_counts_per_prefix_network() {
    let h = hub(Config {
        max_clients_per_ip: 2,
        per_ip_exempt: vec![],
        ..Config::default()
    });
    // One IPv6 /64 is one network: two addresses in it fill it, a third is refused.
    let a = register_as(&h, "[2001:db8:0:1::1]:1").unwrap();
    register_as(&h, "[2001:db8:0:1:ffff::2]:1").unwrap();
    assert_eq!(
        register_as(&h, "[2001:db8:0:1:abcd::3]:1").err(),
        Some(Refusal::PerIp)
    );
    register_as(&h, "[2001:db8:0:2::1]:1").expect("the next /64 is another network");
    // IPv4-mapped IPv6 counts as the IPv4 address it carries.
    register_as(&h, "192.0.2.1:1").unwrap();
    register_as(&h, "[::ffff:192.0.2.1]:1").unwrap();
    assert_eq!(register_as(&h, "192.0.2.1:2").err(), Some(Refusal::PerIp));
    assert_eq!(
        register_as(&h, "[::ffff:192.0.2.1]:2").err(),
        Some(Refusal::PerIp)
    );
    // Closing releases the slot of the network it was counted under.
    h.close(a.id, LeaveReason::Closed, None);
    register_as(&h, "[2001:db8:0:1::9]:1").expect("a slot was released");
}

#[tokio::test]
async fn a_reload_that_changes_the_prefix_keeps_the_counts_consistent() {
    let h = hub(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        per_ip_prefix_v4: 24,
        ..Config::default()
    });
    let a = register_as(&h, "192.0.2.1:1").unwrap();
    assert_eq!(register_as(&h, "192.0.2.2:1").err(), Some(Refusal::PerIp));
    // Reload: per address now. a stays counted under 192.0.2.0/24, where it was admitted.
    h.set_config(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        per_ip_prefix_v4: 32,
        ..Config::default()
    });
    let b = register_as(&h, "192.0.2.2:1").unwrap();
    // a's close must release a's /24 entry, not b's /32 one: b's address stays full.
    h.close(a.id, LeaveReason::Closed, None);
    assert_eq!(register_as(&h, "192.0.2.2:2").err(), Some(Refusal::PerIp));
    register_as(&h, "192.0.2.1:2").expect("a's address is free again");
    drop(b);
    // A client admitted while its network was exempt was never counted, so its close must not
    // decrement the count of a client admitted after the exemption was removed.
    let exempt = Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec!["198.51.100.0/24".parse().unwrap()],
        ..Config::default()
    };
    h.set_config(exempt);
    let x = register_as(&h, "198.51.100.7:1").unwrap();
    h.set_config(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        ..Config::default()
    });
    register_as(&h, "198.51.100.7:2").unwrap();
    h.close(x.id, LeaveReason::Closed, None);
    assert_eq!(
        register_as(&h, "198.51.100.7:3").err(),
        Some(Refusal::PerIp),
        "the counted client still holds the address's one slot"
    );
}

#[tokio::test]
async fn connect_rate_refuses_a_network_over_its_burst_but_not_exempt_ones() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let h = hub(Config {
        connect_rate: Some(crate::config::Rate {
            burst: 2,
            per_sec: 0.01,
        }),
        per_ip_exempt: vec!["203.0.113.0/24".parse().unwrap()],
        ..Config::default()
    });
    // Same /64, different addresses: one network, one bucket.
    assert_eq!(h.check_connect_rate(ip("2001:db8::1")), Ok(()));
    assert_eq!(h.check_connect_rate(ip("2001:db8::2")), Ok(()));
    assert_eq!(
        h.check_connect_rate(ip("2001:db8::3")),
        Err(Refusal::ConnectRate { retry_secs: 100 })
    );
    assert_eq!(
        Refusal::ConnectRate { retry_secs: 100 }.to_string(),
        "too many connections from your network; try again in 100 s"
    );
    assert_eq!(h.counters.rejected.load(Ordering::Relaxed), 1);
    for _ in 0..10 {
        assert_eq!(h.check_connect_rate(ip("203.0.113.9")), Ok(()), "exempt");
    }
    // Turned off by a reload: everyone passes at once.
    h.set_config(Config {
        connect_rate: None,
        ..Config::default()
    });
    assert_eq!(h.check_connect_rate(ip("2001:db8::3")), Ok(()));
}
