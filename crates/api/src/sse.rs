//! Server-sent events of runs: each event as an `event:`/`id:`/`data:` frame, with a
//! keep-alive comment while nothing happens so that proxies keep the connection open.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use berth_runtime::RunEvent;
use std::time::Duration;
use tokio::sync::mpsc;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One SSE frame.
pub fn frame(seq: usize, e: &RunEvent) -> String {
    format!("event: {}\nid: {seq}\ndata: {}\n\n", e.kind, e.data)
}

/// An SSE answer whose events come from `rx`; it ends when `rx` does.
pub fn response(rx: mpsc::Receiver<RunEvent>) -> Response {
    let body = futures_util::stream::unfold((rx, 0usize), |(mut rx, seq)| async move {
        match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Err(_) => Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b": keep-alive\n\n")),
                (rx, seq),
            )),
            Ok(None) => None,
            Ok(Some(e)) => Some((Ok(bytes::Bytes::from(frame(seq, &e))), (rx, seq + 1))),
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    *resp.status_mut() = StatusCode::OK;
    resp
}
