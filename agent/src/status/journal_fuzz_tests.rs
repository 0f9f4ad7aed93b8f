//! Property tests of the status update journal's replay (DESIGN.md
//! "Status updates", "Agent recovery"; docs/fuzzing.md): any bytes replay
//! to the records of a valid prefix, a journal cut short or damaged
//! replays exactly the records before the damage, and the replayed
//! records encode back. The invariants are
//! [`crate::fuzz::status_journal`]'s, shared with the coverage-guided
//! target in `fuzz/`.

use mezzo_proto::mutate::{config, mutated};
use proptest::prelude::*;
use proptest::sample::Index;

use super::{Record, decode_all};
use crate::fuzz;

/// A journal of records from the seeds, with each record's end offset.
fn journal(records: std::ops::Range<usize>) -> impl Strategy<Value = (Vec<u8>, Vec<usize>, Vec<Record>)> {
    let pool = fuzz::journal_records();
    prop::collection::vec(prop::sample::select(pool), records).prop_map(|records| {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for r in &records {
            r.encode(&mut bytes);
            ends.push(bytes.len());
        }
        (bytes, ends, records)
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn journal_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz::status_journal(&bytes);
    }

    #[test]
    fn journal_from_mutated_journals(bytes in mutated(journal(0..8).prop_map(|(b, _, _)| b))) {
        fuzz::status_journal(&bytes);
    }

    /// A journal cut anywhere (a crash mid-write) replays the whole
    /// records before the cut, and nothing else.
    #[test]
    fn a_cut_journal_replays_the_records_before_the_cut((bytes, ends, records) in journal(0..8), at in any::<Index>()) {
        let cut = at.index(bytes.len() + 1);
        let whole = ends.iter().filter(|e| **e <= cut).count();
        let (got, valid) = decode_all(&bytes[..cut]);
        prop_assert_eq!(&got[..], &records[..whole]);
        prop_assert_eq!(valid, if whole == 0 { 0 } else { ends[whole - 1] });
    }

    /// A byte damaged in a record's checksum or body ends the replay at
    /// that record: the ones before it, in full, and nothing after.
    #[test]
    fn a_damaged_record_ends_the_replay((bytes, ends, records) in journal(1..8), which in any::<Index>(), at in any::<Index>(), mask in 1u8..) {
        let hit = which.index(records.len());
        let start = if hit == 0 { 0 } else { ends[hit - 1] };
        // Past the tag and the length: the checksum or the body.
        let pos = start + 5 + at.index(ends[hit] - start - 5);
        let mut damaged = bytes.clone();
        damaged[pos] ^= mask;
        let (got, valid) = decode_all(&damaged);
        prop_assert_eq!(&got[..], &records[..hit]);
        prop_assert_eq!(valid, start);
    }
}

/// Writes this crate's seeds for `scripts/fuzz` (see
/// `mezzo_proto::fuzz::write_seeds`), after checking that each passes.
#[test]
fn write_fuzz_seeds() -> std::io::Result<()> {
    let seeds = fuzz::seeds();
    for (target, input) in &seeds {
        if *target == "status_journal" {
            fuzz::status_journal(input);
        }
    }
    mezzo_proto::fuzz::write_seeds(&seeds)
}
