//! A small Mesos v1 scheduler HTTP client for the tests: calls in JSON or
//! protobuf, and the SUBSCRIBE stream read as RecordIO, as a Mesos
//! framework sees them (events are given as JSON either way).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use mezzo_master::mesos::protobuf;
use mezzo_master::mesos::recordio::Decoder;
use mezzo_proto::security::Transport;
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use reqwest::StatusCode;
use serde_json::Value;

/// How calls and events travel: Mesos' JSON or its protobuf messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Json,
    Protobuf,
}

impl Wire {
    pub fn media_type(self) -> &'static str {
        match self {
            Wire::Json => "application/json",
            Wire::Protobuf => "application/x-protobuf",
        }
    }

    /// A call (given as Mesos JSON) encoded for the wire.
    pub fn encode(self, call: &Value) -> Result<Vec<u8>> {
        match self {
            Wire::Json => Ok(serde_json::to_vec(call)?),
            Wire::Protobuf => {
                let c = serde_json::from_value(call.clone()).context("not a Mesos call")?;
                protobuf::call_to_protobuf(&c).map_err(anyhow::Error::msg)
            }
        }
    }

    /// One record of an event stream, as Mesos JSON.
    pub fn decode(self, record: &[u8]) -> Result<Value> {
        match self {
            Wire::Json => serde_json::from_slice(record)
                .with_context(|| format!("record is not JSON: {:?}", String::from_utf8_lossy(record))),
            Wire::Protobuf => {
                let e = protobuf::event_from_protobuf(record)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("record is not a protobuf Event: {record:?}"))?;
                Ok(serde_json::to_value(e)?)
            }
        }
    }
}

/// Calls to one master's `/api/v1/scheduler` as one principal.
#[derive(Clone)]
pub struct MesosClient {
    http: reqwest::Client,
    /// `http://ADDR` or `https://ADDR`.
    pub base: String,
    /// HTTP Basic: the principal's bare name and a token of it.
    pub auth: Option<(String, String)>,
}

/// An answer: status, headers and body text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl MesosClient {
    /// A client that follows no redirects (the tests look at them); for
    /// https, `tls` is how it trusts the masters (it proves nothing: the
    /// Basic credential does).
    pub fn new(base: &str, tls: Option<&Transport>, auth: Option<(&str, &str)>) -> Result<MesosClient> {
        mezzo_proto::security::tls::ensure_provider();
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5));
        if let Some(c) = tls.and_then(Transport::credentials) {
            b = b.use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(c.client_config(MASTER_DNS_NAME)?));
        }
        Ok(MesosClient {
            http: b.build()?,
            base: base.trim_end_matches('/').to_owned(),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        })
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.post(format!("{}{path}", self.base));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// POSTs raw text with these headers.
    pub async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Result<Answer> {
        self.post_bytes(path, headers, body.as_bytes().to_vec()).await
    }

    /// POSTs raw bytes with these headers.
    pub async fn post_bytes(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Answer> {
        let mut r = self.request(path).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = tokio::time::timeout(Duration::from_secs(30), r.send())
            .await
            .context("no answer in 30 s")??;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Ok(Answer { status, headers, body })
    }

    /// A call (not SUBSCRIBE) in JSON on `stream`.
    pub async fn call(&self, stream: &str, body: &Value) -> Result<Answer> {
        self.call_in(Wire::Json, stream, body).await
    }

    /// A call (not SUBSCRIBE, given as Mesos JSON) sent as `wire` on
    /// `stream`.
    pub async fn call_in(&self, wire: Wire, stream: &str, body: &Value) -> Result<Answer> {
        self.post_bytes(
            "/api/v1/scheduler",
            &[("Content-Type", wire.media_type()), ("Mesos-Stream-Id", stream)],
            wire.encode(body)?,
        )
        .await
    }

    /// A call that must be accepted (202).
    pub async fn call_ok(&self, stream: &str, body: &Value) -> Result<()> {
        self.call_ok_in(Wire::Json, stream, body).await
    }

    /// A call sent as `wire` that must be accepted (202).
    pub async fn call_ok_in(&self, wire: Wire, stream: &str, body: &Value) -> Result<()> {
        let a = self.call_in(wire, stream, body).await?;
        if a.status != StatusCode::ACCEPTED {
            bail!("{} answered {} {:?}", body["type"], a.status, a.body);
        }
        Ok(())
    }

    /// SUBSCRIBE with `body`: the open stream, or the refusal.
    pub async fn subscribe(&self, body: &Value) -> Result<std::result::Result<Subscription, Answer>> {
        self.subscribe_in(Wire::Json, body).await
    }

    /// SUBSCRIBE with `body` (given as Mesos JSON) sent as `wire`, asking
    /// for events as `wire`.
    pub async fn subscribe_in(&self, wire: Wire, body: &Value) -> Result<std::result::Result<Subscription, Answer>> {
        let r = self
            .request("/api/v1/scheduler")
            .header("Content-Type", wire.media_type())
            .header("Accept", wire.media_type())
            .body(wire.encode(body)?);
        let resp = tokio::time::timeout(Duration::from_secs(30), r.send())
            .await
            .context("no answer to SUBSCRIBE in 30 s")??;
        let status = resp.status();
        let headers = resp.headers().clone();
        if status != StatusCode::OK {
            let body = resp.text().await.unwrap_or_default();
            return Ok(Err(Answer { status, headers, body }));
        }
        let stream_id = headers
            .get("Mesos-Stream-Id")
            .and_then(|v| v.to_str().ok())
            .context("no Mesos-Stream-Id")?
            .to_owned();
        let mut s = Subscription {
            stream_id,
            framework_id: String::new(),
            headers,
            wire,
            resp,
            decoder: Decoder::new(16 << 20),
        };
        let first = s.next(Duration::from_secs(10)).await?;
        s.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .with_context(|| format!("first event is not SUBSCRIBED: {first}"))?
            .to_owned();
        Ok(Ok(s))
    }
}

/// An open SUBSCRIBE stream.
pub struct Subscription {
    pub stream_id: String,
    pub framework_id: String,
    pub headers: reqwest::header::HeaderMap,
    /// How its events come, and how its acknowledgements go.
    pub wire: Wire,
    resp: reqwest::Response,
    decoder: Decoder,
}

impl Subscription {
    /// The next event, whatever it is; an error if none comes in `limit`
    /// or the stream ends.
    pub async fn next(&mut self, limit: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(rec) = self.decoder.next_record()? {
                return self.wire.decode(&rec);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .context("no event in time")??;
            match chunk {
                Some(c) => self.decoder.push(&c),
                None => bail!("the stream ended"),
            }
        }
    }

    /// The next event of type `kind` passing `ok`, skipping others.
    pub async fn next_of(&mut self, kind: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await.with_context(|| format!("waiting for {kind}"))?;
            if e["type"] == kind && ok(&e) {
                return Ok(e);
            }
        }
    }

    /// Acknowledges an update of this subscription, as a Mesos framework
    /// does, when it carries a uuid (updates from the master need none).
    pub async fn acknowledge(&self, m: &MesosClient, status: &Value) -> Result<()> {
        let Some(uuid) = status["uuid"].as_str() else {
            return Ok(());
        };
        let ack = serde_json::json!({
            "framework_id": { "value": self.framework_id }, "type": "ACKNOWLEDGE",
            "acknowledge": { "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": uuid }
        });
        m.call_ok_in(self.wire, &self.stream_id, &ack).await
    }

    /// Waits for the stream to end (after an ERROR or a TEARDOWN), giving
    /// the events it carried until then.
    pub async fn until_end(&mut self, limit: Duration) -> Result<Vec<Value>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(e) => seen.push(e),
                Err(e) if e.to_string().contains("ended") => return Ok(seen),
                Err(e) => return Err(e.context(format!("the stream did not end; saw {seen:?}"))),
            }
        }
    }
}

/// The keys of a JSON object, sorted (for shape checks).
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}
