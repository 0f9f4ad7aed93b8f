//! Framework key-value calls: reads answered from the leader's registry,
//! writes proposed to the log and answered when they come back committed
//! (see [`crate::kv`]).

use mezzo_proto::ids::FrameworkId;

use super::{Effect, Master};
use crate::error::MasterError;
use crate::kv::{self, KvAnswer, KvCall, KvDone, KvWrite};
use crate::registry::RegistryOp;

impl Master {
    /// Handles one key-value call. Reads answer at once (`Ok(Some)`);
    /// writes are checked, proposed, and answer `Ok(None)`: the answer
    /// follows as [`Effect::KvDone`] with the same `request` once the write
    /// is committed. The framework must be registered; it need not be
    /// subscribed, so tools can read a framework's state.
    pub fn kv(&mut self, fid: &FrameworkId, call: KvCall, request: u64) -> Result<Option<KvAnswer>, MasterError> {
        if !self.registry.frameworks.contains_key(fid) {
            return Err(MasterError::UnknownFramework(fid.to_string()));
        }
        let ns = self.registry.kv.get(fid);
        let write = match call {
            KvCall::Get { key } => return Ok(Some(KvAnswer::Entry(kv::get(ns, &key)))),
            KvCall::List { prefix } => return Ok(Some(KvAnswer::Entries(kv::list(ns, &prefix)))),
            KvCall::Put {
                key,
                value,
                expected_version,
            } => KvWrite {
                framework: fid.clone(),
                key,
                value: Some(value),
                expected_version,
                request,
            },
            KvCall::Delete { key, expected_version } => KvWrite {
                framework: fid.clone(),
                key,
                value: None,
                expected_version,
                request,
            },
        };
        // Refuse early what would fail anyway; the committed op is checked
        // again when applied, which is what counts.
        kv::check(ns, &write)?;
        let op = match write.value {
            Some(_) => RegistryOp::KvPut(write),
            None => RegistryOp::KvDelete(write),
        };
        self.emit(Effect::Propose(op));
        Ok(None)
    }

    /// A key-value write was committed and applied with this outcome.
    pub(crate) fn kv_applied(&mut self, request: u64, outcome: Result<KvDone, MasterError>) {
        self.emit(Effect::KvDone(request, outcome));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use mezzo_proto::v1;

    use super::*;
    use crate::core::CoreConfig;
    use crate::kv::{KvError, MAX_VALUE_BYTES};
    use crate::registry::Registry;

    /// A master with one subscribed framework; proposals are committed by
    /// hand so that tests can interleave them.
    fn master() -> (Master, FrameworkId) {
        let now = Instant::now();
        let mut m = Master::recover(CoreConfig::default(), Registry::default(), now);
        let info = v1::FrameworkInfo {
            name: "f".into(),
            failover_timeout_secs: 60.0,
            ..Default::default()
        };
        m.subscribe(1, info, None, Vec::new(), now).expect("subscribe");
        let mut id = None;
        for e in m.take_effects() {
            if let Effect::Propose(op) = e {
                if let RegistryOp::RegisterFramework(rec) = &op {
                    id = Some(rec.id.clone());
                }
                m.apply(op, now);
            }
        }
        m.take_effects();
        (m, id.expect("registered"))
    }

    fn proposals(m: &mut Master) -> Vec<RegistryOp> {
        m.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Propose(op) => Some(op),
                _ => None,
            })
            .collect()
    }

    fn commit(m: &mut Master, ops: Vec<RegistryOp>) -> Vec<(u64, Result<KvDone, MasterError>)> {
        for op in ops {
            m.apply(op, Instant::now());
        }
        m.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::KvDone(r, o) => Some((r, o)),
                _ => None,
            })
            .collect()
    }

    fn commit_pending(m: &mut Master) -> Vec<(u64, Result<KvDone, MasterError>)> {
        let ops = proposals(m);
        commit(m, ops)
    }

    fn put(key: &str, value: &[u8], expected_version: Option<u64>) -> KvCall {
        KvCall::Put {
            key: key.into(),
            value: value.to_vec(),
            expected_version,
        }
    }

    /// DESIGN.md "Durable state": a write is answered only after commit,
    /// and reads see it only then.
    #[test]
    fn writes_answer_after_commit_and_reads_see_them() {
        let (mut m, f) = master();
        assert_eq!(m.kv(&f, put("k", b"v", None), 7), Ok(None), "a write waits");
        let ops = proposals(&mut m);
        assert_eq!(ops.len(), 1);
        let get = || KvCall::Get { key: "k".into() };
        assert_eq!(m.kv(&f, get(), 8), Ok(Some(KvAnswer::Entry(None))), "not yet committed");
        let done = commit(&mut m, ops);
        let version = m.registry().applied;
        assert_eq!(done, vec![(7, Ok(KvDone::Put { version }))]);
        match m.kv(&f, get(), 9) {
            Ok(Some(KvAnswer::Entry(Some(e)))) => assert_eq!((e.value, e.version), (b"v".to_vec(), version)),
            other => panic!("{other:?}"),
        }
        let list = m.kv(&f, KvCall::List { prefix: "k".into() }, 10);
        assert!(matches!(list, Ok(Some(KvAnswer::Entries(l))) if l.len() == 1));
    }

    #[test]
    fn unknown_framework_is_refused() {
        let (mut m, _) = master();
        let other = FrameworkId::parse("nope").expect("id");
        let err = m.kv(&other, put("k", b"v", None), 1).expect_err("unknown");
        assert_eq!(err, MasterError::UnknownFramework("nope".into()));
        assert!(proposals(&mut m).is_empty(), "nothing proposed");
    }

    /// Two compare-and-sets racing on one version: both pass the early
    /// check, the first to commit wins, the second is refused at apply.
    #[test]
    fn racing_compare_and_sets_one_wins() {
        let (mut m, f) = master();
        m.kv(&f, put("k", b"a", Some(0)), 1).expect("first");
        m.kv(&f, put("k", b"b", Some(0)), 2).expect("second");
        let done = commit_pending(&mut m);
        assert!(matches!(done[0], (1, Ok(KvDone::Put { .. }))), "{done:?}");
        match &done[1] {
            (2, Err(e)) => {
                assert!(matches!(e, MasterError::Kv(KvError::Conflict { .. })), "{e}");
                assert_eq!(e.code(), crate::error::ErrorCode::Aborted);
            }
            other => panic!("{other:?}"),
        }
        // Now the early check refuses without proposing.
        assert!(m.kv(&f, put("k", b"c", Some(0)), 3).is_err());
        assert!(proposals(&mut m).is_empty());
    }

    #[test]
    fn full_namespace_is_resource_exhausted() {
        let (mut m, f) = master();
        let big = vec![7u8; MAX_VALUE_BYTES];
        let mut ops = Vec::new();
        for i in 0..17 {
            m.kv(&f, put(&format!("k{i}"), &big, None), i).expect("each fits alone");
            ops.extend(proposals(&mut m));
        }
        let done = commit(&mut m, ops);
        let refused: Vec<_> = done.iter().filter(|(_, o)| o.is_err()).collect();
        assert_eq!(refused.len(), 2, "{done:?}");
        let err = refused[0].1.as_ref().expect_err("refused");
        assert_eq!(err.code(), crate::error::ErrorCode::ResourceExhausted);
        let err = m.kv(&f, put("more", &big, None), 99).expect_err("early");
        assert!(err.to_string().contains("namespace"), "{err}");
    }

    /// Teardown removes the namespace with the framework.
    #[test]
    fn teardown_removes_the_namespace() {
        let (mut m, f) = master();
        m.kv(&f, put("k", b"v", None), 1).expect("put");
        commit_pending(&mut m);
        m.teardown(&f).expect("teardown");
        commit_pending(&mut m);
        assert!(m.registry().kv.is_empty());
        assert!(m.kv(&f, KvCall::Get { key: "k".into() }, 2).is_err());
    }
}
