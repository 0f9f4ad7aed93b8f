//! Following a sandbox file for `mezzo logs [-f]` and `mezzo run`'s
//! streaming: the SDK's follower ([`mezzo_sdk::follow`]) reading through
//! this client, so that failures keep their exit codes.

use mezzo_sdk::SandboxChunk;
use mezzo_sdk::follow::SandboxFollow;
pub use mezzo_sdk::follow::Until;

use super::{ApiError, Client};

/// One file of one task's sandbox and how far it has been read.
#[derive(Debug, Clone)]
pub struct Follow(SandboxFollow);

impl Follow {
    pub fn new(framework: &str, task: &str, file: &str) -> Follow {
        Follow(SandboxFollow::new(framework, task, file))
    }

    pub fn tail(self, tail: Option<u64>) -> Follow {
        Follow(self.0.tail(tail))
    }

    pub fn every(self, every: std::time::Duration) -> Follow {
        Follow(self.0.every(every))
    }

    /// Reads the file from where it was left, handing each part to `sink`,
    /// until `until` says so.
    pub async fn run(
        &mut self,
        client: &Client,
        until: &mut Until,
        sink: impl FnMut(&SandboxChunk),
    ) -> Result<(), ApiError> {
        let read = |path: String| {
            let client = client.clone();
            async move { client.get_as::<SandboxChunk>(&path).await }
        };
        self.0.run_with(read, until, sink).await
    }
}

#[cfg(test)]
mod tests {
    /// The SDK asks for no more than an agent gives in one read.
    #[test]
    fn the_sdk_reads_what_an_agent_allows() {
        assert_eq!(mezzo_sdk::follow::MAX_READ, mezzo_agent::files::MAX_READ);
    }
}
