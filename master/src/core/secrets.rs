//! Secrets reach a task only through its agent: the leader opens each
//! secret a task names (in the role its resources were allocated to) into
//! the copy of the task it sends to the agent. The task it keeps, and
//! everything shown from it, holds only the names.

use mezzo_proto::reservation::Role;
use mezzo_proto::v1;

use super::Master;
use crate::auth::seal::{open, secret_context};
use crate::error::MasterError;

/// Whether a task names any secret.
pub(crate) fn names_secrets(info: &v1::TaskInfo) -> bool {
    info.command
        .as_ref()
        .is_some_and(|c| c.environment.iter().any(|e| !e.secret.is_empty()) || !c.secret_files.is_empty())
        || image_credentials_secret(info).is_some()
}

/// The secret holding the credentials for the task's image, if it names one.
fn image_credentials_secret(info: &v1::TaskInfo) -> Option<&str> {
    let image = info.container.as_ref()?.image.as_ref()?;
    Some(image.credentials_secret.as_str()).filter(|s| !s.is_empty())
}

impl Master {
    /// `info` with its secrets' values filled in, for its agent.
    pub(crate) fn with_secrets(&self, role: &Role, info: &v1::TaskInfo) -> Result<v1::TaskInfo, MasterError> {
        let mut out = info.clone();
        if !names_secrets(info) {
            return Ok(out);
        }
        if let Some(cmd) = out.command.as_mut() {
            for e in cmd.environment.iter_mut().filter(|e| !e.secret.is_empty()) {
                let value = self.open_secret(role, &info.task_id, &e.secret)?;
                e.value = String::from_utf8(value).map_err(|_| {
                    MasterError::Invalid(format!(
                        "task {}: secret {:?} is not UTF-8 text; put it in a secret file instead",
                        info.task_id, e.secret
                    ))
                })?;
            }
            for f in cmd.secret_files.iter_mut() {
                f.value = self.open_secret(role, &info.task_id, &f.secret)?;
            }
        }
        if let Some(image) = out.container.as_mut().and_then(|c| c.image.as_mut())
            && !image.credentials_secret.is_empty()
        {
            let value = self.open_secret(role, &info.task_id, &image.credentials_secret)?;
            if !value.contains(&b':') {
                return Err(MasterError::Invalid(format!(
                    "task {}: secret {:?} holds no USER:PASSWORD for image {}",
                    info.task_id, image.credentials_secret, image.reference
                )));
            }
            image.credentials = value;
        }
        Ok(out)
    }

    fn open_secret(&self, role: &Role, task: &str, name: &str) -> Result<Vec<u8>, MasterError> {
        let missing = || {
            MasterError::Invalid(format!(
                "task {task} names secret {name:?}, which role {role} does not have (`mezzo secret list`)"
            ))
        };
        let rec = self
            .registry
            .security
            .secrets
            .get(role)
            .and_then(|s| s.get(name))
            .ok_or_else(missing)?;
        let key = self.cfg.data_key.get().ok_or_else(|| {
            MasterError::Invalid(format!(
                "task {task} names secret {name:?}, but this cluster runs --insecure and keeps no secrets"
            ))
        })?;
        use base64::Engine;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&rec.sealed)
            .map_err(|_| MasterError::Storage(format!("secret {role}/{name} is damaged in the registry")))?;
        open(key, &secret_context(role, name), &sealed).map_err(|_| {
            MasterError::Storage(format!(
                "secret {role}/{name} does not open with this cluster's data key"
            ))
        })
    }
}
