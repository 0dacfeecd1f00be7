//! A UDP relay between an Iroh client and server that can be cut: a partition at the packet level
//! (every datagram dropped, no close, no ICMP), without root or network namespaces.
//!
//! Iroh endpoints tell each other their addresses inside the connection and open direct paths
//! (hole punching), which would route around the relay on loopback. So the relay faces the client on
//! IPv6 (`[::1]`) and the server on IPv4: a client endpoint bound to `[::1]` and a server bound to
//! `127.0.0.1` cannot reach each other except through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Forwards datagrams between one client (whoever sent last to [`UdpRelay::addr`]) and `target`.
pub struct UdpRelay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl UdpRelay {
    /// Starts relaying to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let front = UdpSocket::bind("[::1]:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let is_cut = cut.clone();
        let task = tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            let mut client = None;
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        if !is_cut.load(Ordering::SeqCst) {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    Ok(n) = back.recv(&mut down) => {
                        if let (Some(c), false) = (client, is_cut.load(Ordering::SeqCst)) {
                            let _ = front.send_to(&down[..n], c).await;
                        }
                    }
                }
            }
        });
        Ok(Self { addr, cut, task })
    }

    /// Where the client should send: the address to put in the server's `EndpointAddr`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every datagram from now on (`true`), or relays again (`false`).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
