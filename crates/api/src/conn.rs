//! The connection loop: accepts TCP connections under caps (in total and per client
//! address), gives each a deadline for its request headers, and serves it with hyper
//! (HTTP/1.1 and HTTP/2). A client that opens connections and sends nothing, or sends its
//! headers a byte at a time, holds a connection for at most `header_read_timeout`, and
//! one address cannot take the whole process's file descriptors.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many connections the server holds, and how long a request's headers may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections in all (beyond it, new ones are closed at once).
    pub max_connections: usize,
    /// Open connections from one client address (behind a load balancer, raise it).
    pub max_connections_per_ip: usize,
    /// The longest a client may take to send a request's headers, the first byte of the
    /// connection included; it also closes a keep-alive connection idle that long.
    pub header_read_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address; uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(table: &Arc<PerAddress>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = table.0.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.table.0.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// What a served connection holds until it closes.
struct Held {
    _total: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, asks every
/// open connection to finish its in-flight requests and close, and waits for them.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let addresses = Arc::new(PerAddress::default());
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close rather
                    // than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(total) = total.clone().try_acquire_owned() else {
            metrics::counter!("berth_connections_refused_total", "cap" => "total").increment(1);
            continue;
        };
        let Some(address) = PerAddress::take(&addresses, peer.ip(), limits.max_connections_per_ip)
        else {
            metrics::counter!("berth_connections_refused_total", "cap" => "address").increment(1);
            continue;
        };
        let held = Held {
            _total: total,
            _address: address,
        };
        let (builder, app, closing) = (builder.clone(), app.clone(), closing.clone());
        connections.spawn(async move {
            serve_one(stream, &builder, app, limits, closing).await;
            drop(held);
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}

async fn serve_one(
    stream: TcpStream,
    builder: &Builder<TokioExecutor>,
    app: Router,
    limits: ConnLimits,
    closing: CancellationToken,
) {
    // hyper's header timer starts once it knows the protocol, which takes a first byte: a
    // connection that never sends one is closed here.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
