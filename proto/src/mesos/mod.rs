//! Mesos' v1 HTTP APIs in their JSON form, shared by the master (the
//! scheduler and operator APIs) and the agent (the executor API): the
//! messages ([`types`], [`executor`]), their conversion to and from
//! `mezzo.v1` ([`convert`]; task groups in [`group`], persistent volumes'
//! details in [`volumes`]), their protobuf form ([`protobuf`]) and the
//! framing of their event streams ([`recordio`]).

pub mod convert;
pub mod executor;
pub mod group;
pub mod media;
pub mod protobuf;
pub mod recordio;
pub mod types;
pub mod volumes;

/// Most JSON objects and arrays in one request body: a body of empty
/// objects (`[{},{},...]`, a few bytes each) must not make a server build
/// millions of structs.
pub const MAX_JSON_NODES: usize = 100_000;

/// A request body as `T`, refused first when it holds more than
/// [`MAX_JSON_NODES`] objects and arrays (counted in one pass, outside
/// strings).
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let (mut nodes, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => nodes += 1,
            _ => {}
        }
    }
    if nodes > MAX_JSON_NODES {
        return Err(format!(
            "{nodes} JSON objects and arrays in one call; at most {MAX_JSON_NODES}"
        ));
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}
