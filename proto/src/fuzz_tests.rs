//! Property tests of the id and resource decoders over arbitrary and
//! mutated input (DESIGN.md "Bad input", "Resources"; docs/fuzzing.md).
//! The invariants are the checks in [`crate::fuzz`], shared with the
//! coverage-guided targets in `fuzz/`.

use proptest::prelude::*;
use prost::Message;

use crate::fuzz::{self, RESOURCE_TEXTS, RESOURCE_TOKENS};
use crate::mutate::{config, crossover, mutated, mutated_text, resource, scalar, scalar_name};
use crate::reservation::ReservedResources;
use crate::resources::Resources;
use crate::v1;

/// Characters that matter to the id and resource grammars, and a few that
/// should not be there.
const ALPHABET: &str = "[a-z0-9:;()\\[\\],./*@ _-]{0,64}";

fn valid_text() -> impl Strategy<Value = String> {
    prop::sample::select(RESOURCE_TEXTS).prop_map(str::to_owned)
}

fn encoded_reserve() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(resource(), 0..6).prop_map(|resources| v1::Reserve { resources }.encode_to_vec())
}

fn valid_json() -> impl Strategy<Value = Vec<u8>> {
    valid_text().prop_map(|t| {
        ReservedResources::parse(&t)
            .ok()
            .and_then(|r| serde_json::to_vec(&r).ok())
            .unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn ids_from_any_text(s in "\\PC{0,8}|[a-zA-Z0-9./:@_ -]{0,210}") {
        fuzz::ids(s.as_bytes());
    }

    #[test]
    fn ids_from_mutated_valid_ids(s in mutated_text(prop::sample::select(&["t-1", "job.3", "..a", "a:b@c_d"][..]).prop_map(str::to_owned), &["/", ".", "..", "\0", "é", " ", "%2e"])) {
        fuzz::ids(s.as_bytes());
    }

    #[test]
    fn resource_text_from_any_text(s in ALPHABET) {
        fuzz::resources_text(s.as_bytes());
    }

    #[test]
    fn resource_text_from_mutated_valid_text(s in mutated_text(valid_text(), RESOURCE_TOKENS)) {
        fuzz::resources_text(s.as_bytes());
    }

    /// Built from the structure: every name, role and value the decoder
    /// treats specially, in any combination.
    #[test]
    fn resources_from_generated_protobuf(list in prop::collection::vec(resource(), 0..6)) {
        fuzz::resources_proto(&v1::Reserve { resources: list }.encode_to_vec());
    }

    #[test]
    fn resources_from_mutated_protobuf(bytes in mutated(encoded_reserve())) {
        fuzz::resources_proto(&bytes);
    }

    #[test]
    fn resources_from_spliced_protobuf(bytes in crossover(encoded_reserve(), encoded_reserve())) {
        fuzz::resources_proto(&bytes);
    }

    #[test]
    fn resources_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        fuzz::resources_proto(&bytes);
        fuzz::resources_json(&bytes);
        fuzz::resources_text(&bytes);
    }

    #[test]
    fn resources_from_mutated_json(bytes in mutated(valid_json())) {
        fuzz::resources_json(&bytes);
    }

    /// The JSON form with keys from the pool: a key is a name, never more
    /// text of the form.
    #[test]
    fn resources_from_generated_json(entries in prop::collection::vec((scalar_name(), prop_oneof![scalar().prop_map(serde_json::Value::from), "\\[[0-9,-]{0,12}\\]".prop_map(serde_json::Value::from)]), 0..5)) {
        let map: serde_json::Map<String, serde_json::Value> = entries.into_iter().collect();
        fuzz::resources_json(&serde_json::to_vec(&map).unwrap_or_default());
    }

    /// DESIGN.md "Resources": any value with at most three decimals is
    /// accepted exactly, up to the maximum.
    #[test]
    fn every_whole_thousandth_is_accepted_exactly(milli in prop_oneof![1u64..1_000_000, 1u64..=1_000_000_000_000_000]) {
        let text = format!("gpus:{}.{:03}", milli / 1000, milli % 1000);
        let r = Resources::parse(&text);
        prop_assert_eq!(r.map(|r| r.scalars.get("gpus").copied()), Ok(Some(milli)), "{}", text);
    }

    /// docs/frameworks.md: "Finer values are refused, never rounded": an
    /// accepted value is its thousandths to within float precision.
    #[test]
    fn finer_values_are_refused_not_rounded(v in scalar()) {
        if let Ok(r) = Resources::parse(&format!("gpus:{v}")) {
            let milli = r.scalars.get("gpus").copied().unwrap_or(0) as f64;
            let err = (v * 1000.0 - milli).abs();
            prop_assert!(err <= milli * 8.0 * f64::EPSILON, "{} read as {} thousandths", v, milli);
        }
    }
}

/// Writes this crate's seeds for `scripts/fuzz` (see [`fuzz::write_seeds`]).
#[test]
fn write_fuzz_seeds() -> std::io::Result<()> {
    let seeds = fuzz::seeds();
    for (target, input) in &seeds {
        match *target {
            "ids" => fuzz::ids(input),
            "resources_text" => fuzz::resources_text(input),
            "resources_proto" => fuzz::resources_proto(input),
            _ => fuzz::resources_json(input),
        }
    }
    fuzz::write_seeds(&seeds)
}
