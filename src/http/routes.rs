//! What each HTTP path answers. Only `GET` (and `HEAD`, which axum derives from it); another
//! method on a known path gets 405 with `Allow`, an unknown path 404, and neither reads a body.
//! The browser client's files are [`super::page`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::page;
use crate::metrics::{self, Format};

/// What the handlers read.
pub(crate) struct Site {
    /// The daemon's metrics (a collector reading the hub).
    pub(crate) metrics: Registry,
    /// The room, for the settings in force.
    pub(crate) hub: Arc<crate::hub::Hub>,
    /// The chat listeners' addresses, for the page's "from a terminal" line.
    pub(crate) chat: Vec<SocketAddr>,
    /// Cancelled once the daemon is stopping.
    pub(crate) stopping: CancellationToken,
    /// Where `/ws` connections go.
    pub(crate) ws: Arc<crate::ws::Front>,
}

/// The browser client, its WebSocket, health and metrics.
pub(super) fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/favicon.svg", get(page::icon))
        .route("/ws", get(websocket))
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

/// `GET /ws`: a WebSocket for the browser client (or any other), relayed to a chat session.
/// A request that is not a WebSocket upgrade gets 426 and a word on what this is.
async fn websocket(
    State(site): State<Arc<Site>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(scheme): Extension<super::Scheme>,
    request: Request,
) -> Response {
    site.ws.open(request, peer, scheme)
}
