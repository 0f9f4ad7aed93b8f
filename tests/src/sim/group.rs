//! A connection group: one HTTP/2 connection to the leading master, with
//! one joined agent credential, shared by the Attach streams of up to a
//! hundred or so simulated agents (hyper lets 200 streams share one
//! connection). When an agent's session fails it tells the group, which
//! connects again once for all of them: to the leader a refusal named,
//! else to the next master of the list.

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::security::Transport;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// The group's connection: its generation grows with every reconnect.
#[derive(Debug, Clone, Default)]
struct Conn {
    generation: u64,
    /// The connection and the master it goes to.
    channel: Option<(Channel, Arc<str>)>,
}

/// A handle on one group, cloned into each of its agents.
#[derive(Debug, Clone)]
pub(super) struct Group {
    conn: watch::Receiver<Conn>,
    failed: mpsc::Sender<(u64, Option<String>)>,
}

impl Group {
    /// Starts the group's owner task.
    pub(super) fn start(masters: Vec<String>, transport: Transport) -> Group {
        let (conn_tx, conn) = watch::channel(Conn::default());
        let (failed, failed_rx) = mpsc::channel(1024);
        tokio::spawn(own(masters, transport, conn_tx, failed_rx));
        let _ = failed.try_send((0, None));
        Group { conn, failed }
    }

    /// The connection newer than generation `after`, once there is one.
    pub(super) async fn channel(&mut self, after: u64) -> Option<(u64, Channel, Arc<str>)> {
        let conn = self
            .conn
            .wait_for(|c| c.generation > after && c.channel.is_some())
            .await
            .ok()?;
        let (channel, addr) = conn.channel.clone()?;
        Some((conn.generation, channel, addr))
    }

    /// A session on generation `generation` failed; `leader` is the master
    /// a refusal named.
    pub(super) async fn failed(&self, generation: u64, leader: Option<String>) {
        let _ = self.failed.send((generation, leader)).await;
    }
}

/// Reconnects when a session of the current generation fails (the first
/// report for a generation; the others wait for the next connection).
async fn own(
    masters: Vec<String>,
    transport: Transport,
    conn: watch::Sender<Conn>,
    mut failed: mpsc::Receiver<(u64, Option<String>)>,
) {
    let mut next = 0usize;
    let mut generation = 0u64;
    let mut pause = Duration::from_millis(50);
    while let Some((g, leader)) = failed.recv().await {
        if g != generation {
            continue; // already reconnected since that session started
        }
        // A stale hint falls back to the list, tried in turn.
        let mut hint = leader;
        loop {
            let addr = hint.take().unwrap_or_else(|| {
                next += 1;
                masters[next % masters.len()].clone()
            });
            let endpoint = match mezzo_proto::security::grpc::endpoint(&addr, &transport) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("sim: bad master address {addr}: {e}");
                    return;
                }
            };
            match endpoint.connect().await {
                Ok(channel) => {
                    generation += 1;
                    pause = Duration::from_millis(50);
                    conn.send_replace(Conn {
                        generation,
                        channel: Some((channel, addr.into())),
                    });
                    break;
                }
                Err(e) => {
                    tracing::debug!("sim: cannot connect to {addr}: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        if conn.is_closed() {
            return;
        }
    }
}
