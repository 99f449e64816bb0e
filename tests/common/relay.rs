//! A TCP relay to a test service, standing for one node of a broker cluster (`cut` closes its
//! listener and every connection through it at once, as a node that dies would), or for the
//! way from a network namespace to a service.

use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One relay; cut when dropped.
pub struct Relay {
    pub port: u16,
    bind: String,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Listens on `port` (0: a free one) and relays every connection to `upstream` (`host:port`).
    pub async fn start(upstream: &str, port: u16) -> Relay {
        Relay::start_on("127.0.0.1", upstream, port).await
    }

    /// A relay listening on the address `bind`.
    pub async fn start_on(bind: &str, upstream: &str, port: u16) -> Relay {
        let listener = TcpListener::bind((bind, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (to, conns) = (upstream.to_string(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Relay { port, bind: bind.to_string(), upstream: upstream.to_string(), tasks }
    }

    /// An AMQP URL through this relay, with the user, password and vhost of `url`.
    pub fn amqp_url(&self, url: &str) -> String {
        let (scheme_auth, rest) = url.split_once('@').unwrap_or(("amqp://guest:guest", url));
        let vhost = rest.split_once('/').map_or("", |(_, v)| v);
        format!("{scheme_auth}@127.0.0.1:{}/{vhost}", self.port)
    }

    /// Closes the listener and every relayed connection.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// A new relay on the same port and upstream (the node is back).
    pub async fn restart(&self) -> Relay {
        Relay::start_on(&self.bind, &self.upstream, self.port).await
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}
