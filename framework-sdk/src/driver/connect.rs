//! Finding and reaching the leading master: channels, the master rotation and the reconnection backoff.

use std::time::Duration;

use mezzo_proto::MAX_MESSAGE_BYTES;
use mezzo_proto::backoff::Backoff;
use mezzo_proto::security::Transport;
use mezzo_proto::security::grpc::{self, BearerAuth};
use mezzo_proto::v1::scheduler_client::SchedulerClient;

use crate::calls::Client;

/// Opens a channel to `addr` (`host:port` or a full URI) over `transport`
/// and wraps it in a client that accepts messages as large as the daemons
/// do.
pub(crate) async fn connect(addr: &str, transport: &Transport) -> Result<Client, String> {
    let channel = grpc::connect(addr, transport).await?;
    Ok(SchedulerClient::with_interceptor(channel, BearerAuth::new(transport))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Codes with which a master refuses a subscription for good: retrying the
/// same request cannot help (bad framework info, removed framework).
pub(crate) fn is_fatal_subscribe_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument | PermissionDenied | Unauthenticated | NotFound | FailedPrecondition
    )
}

/// The masters to try, in turn, with a leader hint taking precedence.
#[derive(Debug)]
pub(crate) struct Masters {
    list: Vec<String>,
    next: usize,
    hint: Option<String>,
}

impl Masters {
    pub(crate) fn new(list: Vec<String>) -> Self {
        Masters {
            list,
            next: 0,
            hint: None,
        }
    }

    /// The address to try now.
    pub(crate) fn current(&self) -> Option<&str> {
        self.hint
            .as_deref()
            .or_else(|| self.list.get(self.next).map(String::as_str))
    }

    /// Number of configured masters.
    pub(crate) fn len(&self) -> usize {
        self.list.len().max(1)
    }

    /// The current address failed: forget the hint, or move down the list.
    pub(crate) fn failed(&mut self) {
        if self.hint.take().is_none() && !self.list.is_empty() {
            self.next = (self.next + 1) % self.list.len();
        }
    }

    /// Try `leader` next.
    pub(crate) fn follow(&mut self, leader: String) {
        self.hint = Some(leader);
    }
}

/// The reconnection backoff: from 100 ms, doubling up to `max`, each
/// pause drawn from the upper half of its step.
pub(crate) fn reconnect_backoff(max: Duration) -> Backoff {
    Backoff::new(Duration::from_millis(100), max).jitter(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = reconnect_backoff(Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay();
            ceilings.push(d);
        }
        let bounds = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, ceiling) in ceilings.iter().zip(bounds) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                *d >= ceiling / 2 && *d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn masters_cycle_and_hints_come_first() {
        let mut m = Masters::new(vec!["a".into(), "b".into()]);
        assert_eq!(m.current(), Some("a"));
        m.failed();
        assert_eq!(m.current(), Some("b"));
        m.follow("c".into());
        assert_eq!(m.current(), Some("c"));
        m.failed(); // the hint is dropped, the rotation resumes where it was
        assert_eq!(m.current(), Some("b"));
        m.failed();
        assert_eq!(m.current(), Some("a"));
        assert_eq!(Masters::new(vec![]).current(), None);
    }
}
