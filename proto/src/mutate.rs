//! Structure-aware mutations for the property tests of decoders (feature
//! `proptest`; see `docs/fuzzing.md`).
//!
//! Arbitrary bytes rarely get past a decoder's first check. Starting from
//! a valid encoding and breaking it a little, the way a coverage-guided
//! fuzzer does, reaches the checks behind it: [`mutated`] flips,
//! truncates, deletes, inserts and splices bytes of a valid input;
//! [`mutated_text`] does the same to text and also splices in tokens of
//! the text's grammar.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::v1;

/// Longest run of bytes one mutation inserts, deletes or copies.
const MAX_RUN: usize = 16;

/// One change to an input; positions are fractions of its length, so a
/// mutation applies to an input of any size.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Overwrite one byte with a value that often sits at a boundary
    /// (0, 0x7f, 0x80, 0xff, a protobuf tag or length...).
    Set(Index, u8),
    /// Cut the input short.
    Truncate(Index),
    /// Remove up to [`MAX_RUN`] bytes.
    Delete(Index, usize),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Copy a run of the input to another place in it (duplicates fields,
    /// repeats lengths).
    Splice { from: Index, to: Index, len: usize },
}

fn at(i: &Index, len: usize) -> usize {
    if len == 0 { 0 } else { i.index(len) }
}

impl Mutation {
    /// Applies this mutation to `buf` in place.
    pub fn apply_to(&self, buf: &mut Vec<u8>) {
        match self {
            Mutation::Flip(i, mask) => {
                let n = buf.len();
                if let Some(b) = buf.get_mut(at(i, n)) {
                    *b ^= (*mask).max(1);
                }
            }
            Mutation::Set(i, v) => {
                let n = buf.len();
                if let Some(b) = buf.get_mut(at(i, n)) {
                    *b = *v;
                }
            }
            Mutation::Truncate(i) => {
                let n = buf.len();
                buf.truncate(at(i, n));
            }
            Mutation::Delete(i, len) => {
                let start = at(i, buf.len());
                let end = (start + len).min(buf.len());
                buf.drain(start..end);
            }
            Mutation::Insert(i, bytes) => {
                let pos = at(i, buf.len() + 1);
                buf.splice(pos..pos, bytes.iter().copied());
            }
            Mutation::Splice { from, to, len } => {
                let start = at(from, buf.len());
                let end = (start + len).min(buf.len());
                let run: Vec<u8> = buf[start..end].to_vec();
                let pos = at(to, buf.len() + 1);
                buf.splice(pos..pos, run);
            }
        }
    }
}

/// `input` with every mutation applied in turn.
pub fn apply(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut buf = input.to_vec();
    for m in mutations {
        m.apply_to(&mut buf);
    }
    buf
}

/// Byte values worth trying at a boundary.
const INTERESTING: &[u8] = &[
    0, 1, 2, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x22, b'"', b'\\', b'[', b'{',
];

/// Any one [`Mutation`].
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), prop::sample::select(INTERESTING)).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), 1..=MAX_RUN).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..=MAX_RUN)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), any::<Index>(), 1..=MAX_RUN).prop_map(|(from, to, len)| Mutation::Splice { from, to, len }),
    ]
}

/// A valid input from `valid`, changed by one to four mutations.
pub fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, prop::collection::vec(mutation(), 1..=4)).prop_map(|(v, ms)| apply(&v, &ms))
}

/// A valid text from `valid`, changed by one to four mutations: byte
/// mutations (the result read as UTF-8, lossily) or a token of the
/// grammar (`tokens`: separators, keywords, boundary numbers) inserted.
pub fn mutated_text(
    valid: impl Strategy<Value = String>,
    tokens: impl Into<Vec<&'static str>>,
) -> impl Strategy<Value = String> {
    let token = (any::<Index>(), prop::sample::select(tokens.into()))
        .prop_map(|(i, t)| Mutation::Insert(i, t.as_bytes().to_vec()));
    let change = prop_oneof![1 => mutation(), 1 => token];
    (valid, prop::collection::vec(change, 1..=4))
        .prop_map(|(v, ms)| String::from_utf8_lossy(&apply(v.as_bytes(), &ms)).into_owned())
}

/// A config of `cases` cases, or of `PROPTEST_CASES` when that is set,
/// so that `scripts/fuzz --proptest` can run the same tests for longer.
pub fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Two valid inputs joined at a random point of each (a fuzzer's
/// crossover): the head of one from `a`, the tail of one from `b`.
pub fn crossover(
    a: impl Strategy<Value = Vec<u8>>,
    b: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = Vec<u8>> {
    (a, b, any::<Index>(), any::<Index>()).prop_map(|(a, b, i, j)| {
        let mut out = a[..at(&i, a.len() + 1).min(a.len())].to_vec();
        out.extend_from_slice(&b[at(&j, b.len() + 1).min(b.len())..]);
        out
    })
}

// Generators of API values at the decoders' boundaries.

/// Resource names from a small pool (valid, clashing and malformed), so
/// that duplicates and clashes happen.
pub fn scalar_name() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "cpus", "mem", "disk", "ports", "gpus", "", " gpus", "a;b", "a(b", "x]", "é",
        ][..],
    )
    .prop_map(str::to_owned)
}

/// Roles from a small pool, valid and not.
pub fn role() -> impl Strategy<Value = String> {
    prop::sample::select(&["", "*", "eng", "eng/batch", "eng/", "a b", "ops"][..]).prop_map(str::to_owned)
}

/// Scalars at and around every boundary the decoder checks.
pub fn scalar() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(
            &[
                0.0,
                -0.0,
                -1.0,
                0.0004,
                0.0005,
                0.001,
                0.1,
                1.5,
                500.0004,
                1e12,
                1e12 + 1.0,
                f64::MAX,
                f64::MIN_POSITIVE,
                f64::NAN,
                f64::INFINITY,
            ][..]
        ),
        any::<f64>(),
        (1u64..=1_000_000_000_000_000).prop_map(|m| m as f64 / 1000.0),
    ]
}

/// One API resource built from the pools above, ranges included.
pub fn resource() -> impl Strategy<Value = v1::Resource> {
    let range = (
        prop_oneof![0u64..70000, any::<u64>()],
        prop_oneof![0u64..70000, any::<u64>()],
    )
        .prop_map(|(begin, end)| v1::Range { begin, end });
    (scalar_name(), scalar(), prop::collection::vec(range, 0..3), role()).prop_map(|(name, scalar, ranges, role)| {
        v1::Resource {
            name,
            scalar,
            ranges,
            role,
            reservation_principal: String::new(),
        }
    })
}

/// A resource list for a task, an operation or an agent: mostly valid
/// ones of a few sizes (so that checks past the decoder are reached),
/// sometimes any list of [`resource`]s.
pub fn resources() -> impl Strategy<Value = Vec<v1::Resource>> {
    let valid = prop::sample::select(
        &[
            "cpus:0.5;mem:64",
            "cpus:1",
            "mem:32;ports:[31000-31001]",
            "cpus(eng):1;mem(eng):64",
            "cpus:0.1;gpus:1",
            "cpus:100;mem:100000",
            "disk:10",
        ][..],
    )
    .prop_map(|t| {
        crate::reservation::ReservedResources::parse(t)
            .map(|r| r.to_proto())
            .unwrap_or_default()
    });
    prop_oneof![3 => valid, 1 => prop::collection::vec(resource(), 0..4)]
}

/// Ids from a small pool: valid ones, the path tricks and the limits.
pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&["t1", "t2", "a1", "f1", "o0", "o1", "..a"][..]).prop_map(str::to_owned),
        1 => prop::sample::select(&["", ".", "..", "a/b", "../x", "x\0", "\u{e9}"][..]).prop_map(str::to_owned),
        1 => (200usize..=201).prop_map(|n| "x".repeat(n)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #![proptest_config(config(64))]

        /// Mutations never panic, whatever the input's length, and grow it
        /// by at most one run each.
        #[test]
        fn mutations_apply_to_any_input(input in prop::collection::vec(any::<u8>(), 0..8), ms in prop::collection::vec(mutation(), 0..6)) {
            let out = apply(&input, &ms);
            prop_assert!(out.len() <= input.len() + ms.len() * MAX_RUN);
        }
    }
}
