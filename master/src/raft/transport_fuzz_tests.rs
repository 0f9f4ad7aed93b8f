//! Property tests of the Raft transport's receiving side over arbitrary
//! and mutated batches (DESIGN.md "Bad input"; docs/fuzzing.md). The
//! invariants are [`crate::fuzz::raft_batch`]'s, shared with the
//! coverage-guided target in `fuzz/`.

use mezzo_proto::mutate::{config, crossover, mutated};
use mezzo_proto::v1;
use proptest::prelude::*;
use prost::Message as _;

use crate::fuzz::{self, seed};

/// A batch whose ends are members or not, with messages taken from the
/// seeds (each mutated or not) or any bytes.
fn batch() -> impl Strategy<Value = Vec<u8>> {
    let message = prop_oneof![
        3 => seed("raft_batch").prop_map(|b| v1::RaftBatch::decode(b.as_slice()).map(|b| b.messages).unwrap_or_default()),
        1 => mutated(seed("raft_batch")).prop_map(|b| vec![b]),
        1 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..3),
    ];
    (0u64..5, 0u64..5, prop::collection::vec(message, 1..3)).prop_map(|(from, to, parts)| {
        v1::RaftBatch {
            from,
            to,
            messages: parts.concat(),
        }
        .encode_to_vec()
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn raft_batch_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::raft_batch(&bytes);
    }

    #[test]
    fn raft_batch_from_generated_batches(bytes in batch()) {
        fuzz::raft_batch(&bytes);
    }

    /// Mutations of whole batches reach inside the messages they carry.
    #[test]
    fn raft_batch_from_mutated_batches(bytes in mutated(prop_oneof![seed("raft_batch"), batch()])) {
        fuzz::raft_batch(&bytes);
    }

    #[test]
    fn raft_batch_from_spliced_batches(bytes in crossover(seed("raft_batch"), batch())) {
        fuzz::raft_batch(&bytes);
    }
}

/// Found by cargo fuzz (false alarms of the check, kept as its tests):
/// rust-protobuf keeps unknown fields in a hash map, so a message with
/// some encodes them in any order, and one whose snapshot field came twice
/// (the first with an unknown field) holds an emptied map that `==` tells
/// from none. The check compares the known fields.
#[test]
fn a_repeated_snapshot_field_encodes_back() {
    let mut repeated = vec![8, 7, 16, 2, 24, 1];
    repeated.extend([74, 2, 24, 1]);
    repeated.extend([74, 4, 10, 2, b'{', b'}']);
    // Two unknown fields (numbers 4003 and 4010), which a hash map may
    // give back in either order.
    let unknown = vec![8, 3, 16, 2, 24, 1, 152, 250, 1, 7, 208, 250, 1, 9];
    let batch = v1::RaftBatch {
        from: 1,
        to: 2,
        messages: vec![repeated, unknown],
    };
    fuzz::raft_batch(&batch.encode_to_vec());
}
