//! Content negotiation as Mesos' HTTP APIs do it, for the master's
//! scheduler and operator APIs and the agent's executor API alike: the
//! body's encoding from `Content-Type`, the answer's from `Accept`.

use http::{HeaderMap, StatusCode, header};

/// How a call or its event stream is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// JSON only (the operator and executor APIs).
pub const JSON: &[Encoding] = &[Encoding::Json];
/// Both, JSON first, as Mesos prefers it (the scheduler API).
pub const ANY: &[Encoding] = &[Encoding::Json, Encoding::Protobuf];

impl Encoding {
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }
}

/// Why a request's media types are refused: the status to answer and
/// Mesos' message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn names(served: &[Encoding]) -> String {
    served.iter().map(|e| e.media_type()).collect::<Vec<_>>().join(" or ")
}

/// The media types a header lists, without their parameters.
fn listed(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|part| part.split(';').next().map(str::trim).unwrap_or(""))
}

/// The encoding of a request's body among `served`, from its
/// `Content-Type`: 400 without one, 415 for another.
pub fn request_encoding(headers: &HeaderMap, served: &[Encoding]) -> Result<Encoding, Refusal> {
    let Some(ctype) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            message: "Expecting 'Content-Type' to be present".into(),
        });
    };
    let media = listed(ctype).next().unwrap_or("");
    served
        .iter()
        .copied()
        .find(|e| e.media_type() == media)
        .ok_or_else(|| Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("Expecting 'Content-Type' of {}", names(served)),
        })
}

/// The encoding to answer in among `served`, in their order, from
/// `Accept` (none, `*/*` and `application/*` allow any), as Mesos picks it
/// whatever the request's own: 406 when `Accept` allows none.
pub fn response_encoding(headers: &HeaderMap, served: &[Encoding]) -> Result<Encoding, Refusal> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return served.first().copied().ok_or_else(|| refusal_406(served));
    };
    let allows = |e: Encoding| listed(accept).any(|m| matches!(m, "application/*" | "*/*" | "") || m == e.media_type());
    served
        .iter()
        .copied()
        .find(|e| allows(*e))
        .ok_or_else(|| refusal_406(served))
}

fn refusal_406(served: &[Encoding]) -> Refusal {
    Refusal {
        status: StatusCode::NOT_ACCEPTABLE,
        message: format!("Expecting 'Accept' to allow {}", names(served)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn content_types_and_accept_choose_as_mesos_does() {
        let status = |r: Result<Encoding, Refusal>| r.err().map(|r| r.status);
        assert_eq!(status(request_encoding(&h(&[]), ANY)), Some(StatusCode::BAD_REQUEST));
        let text = h(&[(header::CONTENT_TYPE, "text/plain")]);
        assert_eq!(
            status(request_encoding(&text, ANY)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let pb = h(&[(header::CONTENT_TYPE, "application/x-protobuf")]);
        assert_eq!(request_encoding(&pb, ANY).ok(), Some(Encoding::Protobuf));
        assert_eq!(
            status(request_encoding(&pb, JSON)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let json = h(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")]);
        assert_eq!(request_encoding(&json, JSON).ok(), Some(Encoding::Json));
        // JSON when allowed, whatever the call's encoding; else protobuf when named.
        assert_eq!(response_encoding(&HeaderMap::new(), ANY).ok(), Some(Encoding::Json));
        let accept = |a: &str, served| response_encoding(&h(&[(header::ACCEPT, a)]), served).map_err(|r| r.status);
        assert_eq!(accept("*/*", ANY).ok(), Some(Encoding::Json));
        assert_eq!(accept("application/x-protobuf", ANY).ok(), Some(Encoding::Protobuf));
        assert_eq!(accept("application/json", ANY).ok(), Some(Encoding::Json));
        assert_eq!(
            accept("application/json, application/x-protobuf", ANY).ok(),
            Some(Encoding::Json)
        );
        assert_eq!(accept("application/*;q=0.5", JSON).ok(), Some(Encoding::Json));
        assert_eq!(
            accept("application/x-protobuf", JSON).err(),
            Some(StatusCode::NOT_ACCEPTABLE)
        );
        assert_eq!(accept("text/html", ANY).err(), Some(StatusCode::NOT_ACCEPTABLE));
    }
}
