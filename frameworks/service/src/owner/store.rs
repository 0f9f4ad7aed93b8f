//! Persistence: the service records in the framework's key-value
//! namespace, read once subscribed and written when changed.

use mezzo_sdk::{Kv, SdkError};
use tracing::{info, warn};

use super::Owner;
use super::state::Svc;
use crate::plan::Phase;
use crate::record::{self, ServiceRecord};

impl Owner {
    /// Reads every service record; instances are `Unknown` until the master
    /// answers for them.
    pub(super) async fn load(&mut self) {
        match self.kv.list(record::PREFIX).await {
            Ok(entries) => {
                for e in entries {
                    match serde_json::from_slice::<ServiceRecord>(&e.value) {
                        Ok(rec) => {
                            info!(service = %rec.name, instances = rec.instances.len(), "recovered service");
                            self.services.insert(rec.name.clone(), Svc::new(rec, Phase::Unknown));
                        }
                        Err(err) => warn!(key = %e.key, "unreadable service record skipped: {err}"),
                    }
                }
                self.loaded = true;
            }
            Err(e) => warn!("cannot read the service records yet: {e}"),
        }
    }

    /// Writes changed records; deletes those of removed services once
    /// nothing of them runs.
    pub(super) async fn flush(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(s) = self.services.get_mut(&name) else {
                continue;
            };
            if s.rec.removing && s.rec.instances.is_empty() {
                match self.kv.delete(&record::key(&name)).await {
                    Ok(_) => {
                        info!(service = %name, "removed");
                        self.services.remove(&name);
                    }
                    Err(e) => warn!(service = %name, "cannot delete the record yet: {e}"),
                }
                continue;
            }
            if !s.dirty {
                continue;
            }
            match put(&self.kv, &s.rec).await {
                Ok(()) => s.dirty = false,
                Err(e) => warn!(service = %name, "cannot write the record yet: {e}"),
            }
        }
    }
}

/// Writes one service's record.
pub(super) async fn put(kv: &Kv, rec: &ServiceRecord) -> Result<(), SdkError> {
    let bytes = serde_json::to_vec(rec).map_err(|e| SdkError::Transport(format!("encode: {e}")))?;
    kv.put(&record::key(&rec.name), bytes).await.map(drop)
}
