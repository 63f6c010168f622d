//! A TCP proxy a test can cut and restore, standing for an outage of what is behind it (a
//! database, a cache): cutting resets every connection and refuses new ones; restoring
//! listens again on the same address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};

pub struct TcpProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = TcpProxy {
            addr: listener.local_addr().unwrap(),
            up: Arc::new(AtomicBool::new(true)),
            task: None,
            target: target.to_owned(),
        };
        p.serve(listener);
        p
    }

    /// A proxy in front of the server of `url` (a database URL), and `url` rewritten to go
    /// through it.
    pub async fn in_front_of(url: &str) -> (TcpProxy, String) {
        let mut via = reqwest::Url::parse(url).unwrap();
        let target = format!("{}:{}", via.host_str().unwrap(), via.port().unwrap_or(5432));
        let proxy = TcpProxy::start(&target).await;
        via.set_host(Some("127.0.0.1")).unwrap();
        via.set_port(Some(proxy.addr.port())).unwrap();
        (proxy, via.to_string())
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, up) = (self.target.clone(), self.up.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let up = up.clone();
                conns.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    if up.load(Ordering::SeqCst) {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Cuts every connection and stops listening.
    pub fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            // Aborting drops the listener and the `JoinSet`, which aborts every connection.
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restore(&mut self) {
        self.up.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}
