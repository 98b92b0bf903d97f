//! What each HTTP path answers. Only `GET` (and `HEAD`, which axum derives from it); another
//! method on a known path gets 405 with `Allow`, an unknown path 404, and neither reads a body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::metrics::{self, Format};

/// What the handlers read.
pub(crate) struct Site {
    /// The daemon's metrics (a collector reading the hub).
    pub(crate) metrics: Registry,
    /// The chat listeners' addresses, for the front page.
    pub(crate) chat: Vec<SocketAddr>,
    /// Cancelled once the daemon is stopping.
    pub(crate) stopping: CancellationToken,
}

/// Health, metrics and the front page.
pub(super) fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(front_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(scrape))
        .with_state(site)
}

/// 200 `ok` while serving, 503 `stopping` once the stop began, so a load balancer takes the
/// daemon out of rotation while its clients are being disconnected.
async fn healthz(State(site): State<Arc<Site>>) -> Response {
    let (status, body) = if site.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// The metrics, in the format the `Accept` header prefers (see [`Format::negotiate`]).
async fn scrape(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match metrics::encode(&site.metrics, format) {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, format.content_type()),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(e) => {
            // Encoding into a String fails only on a bug in a collector.
            error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Until the browser client exists: what this is and how to chat, for whoever opens the
/// default address in a browser.
async fn front_page(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(host_name);
    let commands: String = site
        .chat
        .iter()
        .map(|addr| {
            // A wildcard address is every address of this host: the one the browser used.
            let ip = if addr.ip().is_unspecified() {
                host.unwrap_or("HOST").to_owned()
            } else {
                addr.ip().to_string()
            };
            format!("nc {ip} {}\n", addr.port())
        })
        .collect();
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>groupchatd</title>\n</head>\n<body>\n<h1>groupchatd</h1>\n\
         <p>A group-chat relay. To chat, connect a line client such as netcat to a chat port:</p>\n\
         <pre>{commands}</pre>\n\
         <p>Choose a nickname, then type; <code>/help</code> lists the commands.</p>\n\
         <p>For operators: <a href=\"/metrics\">/metrics</a> (Prometheus) and \
         <a href=\"/healthz\">/healthz</a> (health check).</p>\n</body>\n</html>\n"
    );
    let csp = HeaderValue::from_static("default-src 'none'; base-uri 'none'; form-action 'none'");
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        page,
    )
        .into_response()
}

/// The host part of a `Host` header if it is a plain name or address (so it can go into the page
/// as it is, with nothing to escape); else None.
fn host_name(host: &str) -> Option<&str> {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next()?,
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    (!name.is_empty() && name.len() <= 253 && name.chars().all(plain)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn only_plain_host_names_reach_the_page() {
        assert_eq!(host_name("chat.example.org:7080"), Some("chat.example.org"));
        assert_eq!(host_name("chat.example.org"), Some("chat.example.org"));
        assert_eq!(host_name("[2001:db8::1]:7080"), Some("[2001:db8::1]"));
        assert_eq!(host_name("<script>:7080"), None);
        assert_eq!(host_name("a\"b"), None);
        assert_eq!(host_name("[::1"), None);
        assert_eq!(host_name(""), None);
    }
}
