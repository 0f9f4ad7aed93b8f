//! The one error type of every scheduler call.

/// Why a call to the master did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkError {
    /// The driver is (re)connecting; nothing was sent. Retry after the next
    /// [`Event::Subscribed`](crate::Event::Subscribed).
    #[error("not connected to a leading master")]
    NotConnected,
    /// The master refused the call; `message` says why (unknown offer,
    /// resources beyond the offer, duplicate task id, ...).
    #[error("the master refused the call ({code:?}): {message}")]
    Rejected {
        /// The gRPC status code the master answered.
        code: tonic::Code,
        /// The master's explanation.
        message: String,
    },
    /// A compare-and-set of the key-value store found another version: read
    /// the key again and decide anew.
    #[error("version conflict: {0}")]
    Conflict(String),
    /// The call may not have reached the master (connection lost, master
    /// unavailable or no longer the leader).
    #[error("transport error: {0}")]
    Transport(String),
    /// No answer within [`SchedulerConfig::call_timeout`](crate::SchedulerConfig::call_timeout).
    #[error("the call timed out")]
    Timeout,
    /// The driver has stopped (see [`Scheduler::stop`](crate::Scheduler::stop)
    /// and [`Event::Error`](crate::Event::Error)).
    #[error("the scheduler driver has stopped")]
    Stopped,
}

impl SdkError {
    /// Maps a gRPC status: UNAVAILABLE and CANCELLED are transport trouble,
    /// DEADLINE_EXCEEDED a timeout, every other code a refusal.
    pub fn from_status(status: &tonic::Status) -> SdkError {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Cancelled => SdkError::Transport(status.message().to_owned()),
            tonic::Code::DeadlineExceeded => SdkError::Timeout,
            tonic::Code::Aborted => SdkError::Conflict(status.message().to_owned()),
            code => SdkError::Rejected {
                code,
                message: status.message().to_owned(),
            },
        }
    }

    /// True when the same call may succeed if made again later (after a
    /// reconnection); false when the master refused it or the driver stopped.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SdkError::NotConnected | SdkError::Transport(_) | SdkError::Timeout
        )
    }
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        SdkError::from_status(&status)
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    #[test]
    fn statuses_map_to_the_documented_variants() {
        let cases = [
            (
                Status::unavailable("not the leader"),
                SdkError::Transport("not the leader".into()),
            ),
            (Status::cancelled("gone"), SdkError::Transport("gone".into())),
            (Status::deadline_exceeded("slow"), SdkError::Timeout),
            (
                Status::aborted("key \"k\": expected version 0, found version 5"),
                SdkError::Conflict("key \"k\": expected version 0, found version 5".into()),
            ),
            (
                Status::invalid_argument("unknown offer o-1"),
                SdkError::Rejected {
                    code: Code::InvalidArgument,
                    message: "unknown offer o-1".into(),
                },
            ),
            (
                Status::failed_precondition("not subscribed"),
                SdkError::Rejected {
                    code: Code::FailedPrecondition,
                    message: "not subscribed".into(),
                },
            ),
            (
                Status::already_exists("duplicate task id t-1"),
                SdkError::Rejected {
                    code: Code::AlreadyExists,
                    message: "duplicate task id t-1".into(),
                },
            ),
        ];
        for (status, want) in cases {
            assert_eq!(SdkError::from(status.clone()), want, "{status:?}");
        }
    }

    #[test]
    fn only_connection_trouble_is_retryable() {
        assert!(SdkError::NotConnected.is_retryable());
        assert!(SdkError::Transport("x".into()).is_retryable());
        assert!(SdkError::Timeout.is_retryable());
        assert!(!SdkError::Stopped.is_retryable());
        let rejected = SdkError::Rejected {
            code: Code::InvalidArgument,
            message: "bad".into(),
        };
        assert!(!rejected.is_retryable());
        assert!(rejected.to_string().contains("bad"));
    }
}
