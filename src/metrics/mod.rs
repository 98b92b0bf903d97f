//! What `GET /metrics` says, in Prometheus's formats.
//!
//! One [`Collector`] reads the daemon's own state when scraped: the hub's totals ([`Counters`]),
//! its rooms and connections, and the fan-out histogram ([`histogram`]). Nothing is counted twice
//! for metrics, and the per-line path pays only relaxed atomic adds: the totals it kept already,
//! one per room for its line count, and one observation per delivery round. Reading the rooms and
//! connections takes their locks briefly, once per scrape. Every name starts with `groupchatd_`;
//! the README's table says what each one means.
//!
//! Both text formats are served (prometheus-client encodes both): OpenMetrics 1.0 when the
//! scraper asks for it (Prometheus does), Prometheus text 0.0.4 otherwise (curl, older tools).

pub(crate) mod histogram;

use std::fmt;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::hub::{Counters, Hub};

/// The prefix of every metric name.
const PREFIX: &str = "groupchatd";

/// `Content-Type` of an OpenMetrics 1.0 text exposition.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text formats a scrape can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0 (counters' families without `_total`, `# EOF` at the end).
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics if the `Accept` header lists it (with a non-zero weight), else 0.0.4, which
    /// every scraper reads.
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let wanted = accept.unwrap_or("").split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wanted {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// Its `Content-Type`.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The daemon's metrics: a registry whose one collector reads `hub`.
pub(crate) fn registry(hub: Arc<Hub>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(HubCollector { hub }));
    registry
}

/// Everything in `registry`, in `format`.
pub(crate) fn encode(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(4096);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
    }
    Ok(text)
}

/// Reads the hub at each scrape.
#[derive(Debug)]
struct HubCollector {
    hub: Arc<Hub>,
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let hub = &self.hub;
        let e = &mut encoder;

        let mut clients = e.encode_descriptor(
            "clients",
            "Connections now (joined or still choosing a nickname), by transport",
            None,
            MetricType::Gauge,
        )?;
        for (transport, n) in hub.clients_by_transport() {
            let labels = [("transport", transport.label())];
            ConstGauge::new(n as u64).encode(clients.encode_family(&labels)?)?;
        }

        let rooms = hub.rooms();
        gauge(e, "rooms", "Chat rooms now", rooms.len() as u64)?;
        let mut members = e.encode_descriptor(
            "room_members",
            "Members in each room now",
            None,
            MetricType::Gauge,
        )?;
        for room in &rooms {
            let labels = [("room", &*room.name)];
            ConstGauge::new(room.members as u64).encode(members.encode_family(&labels)?)?;
        }
        let mut lines = e.encode_descriptor(
            "room_lines",
            "Chat lines published in each room since it was made (or this process took over)",
            None,
            MetricType::Counter,
        )?;
        for room in &rooms {
            let labels = [("room", &*room.name)];
            ConstCounter::new(room.lines).encode(lines.encode_family(&labels)?)?;
        }

        let c: &Counters = &hub.counters;
        let get = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        let totals = [
            (
                "connections",
                "Connections accepted and admitted",
                get(&c.connections),
            ),
            (
                "rejected_connections",
                "Connections refused at the door (server full, per-network limit or rate, stopping)",
                get(&c.rejected),
            ),
            (
                "lines_relayed",
                "Chat lines relayed, each counted once however many members got it",
                get(&c.lines_relayed),
            ),
            (
                "bytes_relayed",
                "Bytes of chat relayed, each line counted once however many members got it",
                get(&c.bytes_relayed),
            ),
            ("kicks", "Clients kicked by an operator", get(&c.kicks)),
            (
                "slow_consumer_drops",
                "Clients disconnected for not reading fast enough (queue full or write timeout)",
                get(&c.slow_drops),
            ),
            (
                "throttled_senders",
                "Times a sender went over its flood budget and was slowed down",
                get(&c.throttled),
            ),
            (
                "upgrades",
                "Upgrades that handed the service to a new process, over the service's life",
                get(&c.upgrades),
            ),
            (
                "tls_handshake_failures",
                "TLS handshakes that failed",
                get(&c.tls_handshake_failures),
            ),
        ];
        for (name, help, value) in totals {
            let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(m)?;
        }

        if let Some(relay) = hub.relay_handle() {
            let t = relay.totals();
            gauge(
                e,
                "cluster_link_up",
                "1 while the cluster link to NATS is up (connected, stream and buckets made)",
                u64::from(t.up),
            )?;
            let link = [
                (
                    "cluster_published",
                    "Room events published to the cluster's stream",
                    t.published,
                ),
                (
                    "cluster_acknowledged",
                    "Of those, acknowledged by JetStream",
                    t.acked,
                ),
                (
                    "cluster_errors",
                    "Publishes, acknowledgements and key-value operations that failed",
                    t.errors,
                ),
                (
                    "cluster_applied",
                    "Room events applied from the cluster's stream",
                    t.applied,
                ),
            ];
            for (name, help, value) in link {
                let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(value).encode(m)?;
            }
            let m = e.encode_descriptor(
                "cluster_rtt",
                "The last round trip to the NATS server (a heartbeat's write)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(t.rtt_secs).encode(m)?;
        }

        let reading = hub.fanout.read();
        let mut m = e.encode_descriptor(
            "fanout_latency",
            "Time from a line's append to the end of the delivery round that wrote it to the room",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(reading.sum_secs, reading.count, &reading.buckets, None)?;

        let started = hub
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let m = e.encode_descriptor(
            "start_time",
            "When the service started (its first process, before any upgrade), Unix time",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(started).encode(m)
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        // What Prometheus 2 and 3 send.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
        assert_eq!(Format::OpenMetrics.content_type(), OPENMETRICS);
        assert!(
            Format::Prometheus
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }
}
