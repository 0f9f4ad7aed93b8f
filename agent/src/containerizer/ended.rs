//! A container found after an agent restart that had already ended and
//! whose cgroup is gone: only its recorded exit is left, which is still the
//! truth to report (rather than LOST).

use futures::future::BoxFuture;

use super::{Container, ContainerError, ExitStatus, Signal};

/// An ended container: `wait` returns its recorded end at once.
#[derive(Debug)]
pub struct EndedContainer {
    id: String,
    end: Result<ExitStatus, String>,
}

impl EndedContainer {
    /// `end`: the exit status, or why the task never started.
    pub fn new(id: String, end: Result<ExitStatus, String>) -> Self {
        EndedContainer { id, end }
    }
}

impl Container for EndedContainer {
    fn pid(&self) -> u32 {
        0
    }

    fn signal(&self, _signal: Signal) -> Result<(), ContainerError> {
        Ok(())
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<ExitStatus, ContainerError>> {
        let end = self.end.clone();
        let id = self.id.clone();
        Box::pin(async move { end.map_err(|why| ContainerError::NeverStarted(format!("container {id}: {why}"))) })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(async { Ok(()) })
    }
}
