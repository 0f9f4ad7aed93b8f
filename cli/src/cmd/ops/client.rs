//! A small client of the operator API: tries each master, follows a
//! follower's 307 to the leader itself (so the bearer token goes along:
//! HTTP clients drop it on a redirect to another host), and turns HTTP
//! errors into [`ApiError`] kinds that map to exit codes.

use std::time::Duration;

use mezzo_master::http::ErrorBody;
use serde_json::Value;

/// How an operator call failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("bad request: {0}")]
    Bad(String),
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    /// Exit codes scripts can rely on (see docs/operator-api.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            ApiError::Other(_) => 1,
            ApiError::NotFound(_) => 2,
            ApiError::Refused(_) => 3,
            ApiError::Bad(_) => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    masters: Vec<String>,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(masters: &str, token: Option<String>) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Other(e.to_string()))?;
        let masters = super::super::comma_list(masters);
        if masters.is_empty() {
            return Err(ApiError::Bad("--master: no master address given".into()));
        }
        Ok(Client {
            masters,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Any method; `body` is sent as JSON.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let mut last = ApiError::Other("no master answered".into());
        for m in &self.masters {
            let mut url = format!("http://{m}{path}");
            for _hop in 0..5 {
                let mut req = self.http.request(method.clone(), &url);
                if let Some(t) = &self.token {
                    req = req.bearer_auth(t);
                }
                if let Some(b) = &body {
                    req = req.json(b);
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        last = ApiError::Other(format!("{m}: {e}"));
                        break;
                    }
                };
                let status = resp.status();
                if status.is_redirection()
                    && let Some(loc) = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                {
                    url = loc.to_owned();
                    continue;
                }
                let text = resp.text().await.unwrap_or_default();
                let msg = || {
                    serde_json::from_str::<ErrorBody>(&text)
                        .map(|b| b.error)
                        .unwrap_or_else(|_| text.trim().to_owned())
                };
                return match status.as_u16() {
                    200..=299 => {
                        serde_json::from_str(&text).map_err(|e| ApiError::Other(format!("bad JSON from {url}: {e}")))
                    }
                    404 => Err(ApiError::NotFound(msg())),
                    401 | 403 => Err(ApiError::Refused(msg())),
                    400 | 409 | 422 => Err(ApiError::Bad(msg())),
                    503 => {
                        last = ApiError::Other(format!("{m}: {}", msg()));
                        break;
                    }
                    _ => Err(ApiError::Other(format!("{status}: {}", msg()))),
                };
            }
        }
        Err(last)
    }
}
