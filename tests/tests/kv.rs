//! DESIGN.md "Durable state (Raft)": a framework's key-value namespace in
//! the replicated registry, through real masters: writes answered after
//! commit, readable after the leader is killed, size limits and unknown
//! frameworks refused with clear errors, removed on teardown.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::v1;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use mezzo_sdk::{SdkError, kv};
use mezzo_tests::{Cluster, ClusterSpec, fw};
use tonic::Code;

/// Retries a call while the SDK reconnects to a new leader (30 s at most).
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(t) => return Ok(t),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_survives_leader_failover_and_goes_with_teardown() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec {
        masters: 3,
        agents: 0,
        ..Default::default()
    })
    .await?;
    let result = async {
        c.wait_leader().await?;
        let (s, _ev, fid) = fw::subscribe(&c, "kv", None).await?;
        let kv = s.kv();
        let v1 = kv.put("jobs/a", b"one".to_vec()).await?;
        kv.put("jobs/b", b"two".to_vec()).await?;
        kv.put("other", b"three".to_vec()).await?;
        let v2 = kv.put_if("jobs/a", b"uno".to_vec(), v1).await?;
        ensure!(v2 > v1, "versions grow: {v1} then {v2}");
        match kv.put_if("jobs/a", b"stale".to_vec(), v1).await {
            Err(SdkError::Conflict(why)) => ensure!(why.contains("jobs/a"), "{why}"),
            other => bail!("a stale compare-and-set must conflict: {other:?}"),
        }
        ensure!(
            kv.put_if("jobs/b", b"x".to_vec(), 0).await.is_err(),
            "create-only on an existing key"
        );

        // Oversized input is refused with the limit named; nothing changes.
        let big = vec![0u8; kv::MAX_VALUE_BYTES + 1];
        match kv.put("jobs/big", big).await {
            Err(SdkError::Rejected {
                code: Code::InvalidArgument,
                message,
            }) => {
                ensure!(message.contains("limit is 262144"), "{message}")
            }
            other => bail!("oversized value: {other:?}"),
        }
        match kv.put(&"k".repeat(kv::MAX_KEY_BYTES + 1), b"v".to_vec()).await {
            Err(SdkError::Rejected {
                code: Code::InvalidArgument,
                message,
            }) => {
                ensure!(message.contains("key: 257 bytes"), "{message}")
            }
            other => bail!("oversized key: {other:?}"),
        }
        ensure!(kv.get("jobs/big").await?.is_none());

        // An unknown framework gets NOT_FOUND naming it.
        let leader = c.wait_leader().await?;
        let mut raw = SchedulerClient::new(c.channel(&c.masters[leader].addr).await?);
        let err = raw
            .kv_get(v1::KvGetRequest {
                framework_id: "no-such-framework".into(),
                key: "k".into(),
            })
            .await
            .expect_err("unknown framework");
        ensure!(err.code() == Code::NotFound, "{err:?}");
        ensure!(err.message().contains("no-such-framework"), "{err:?}");

        // Kill the leader: what was acknowledged is still there.
        c.masters[leader].kill().await;
        c.wait_leader().await.context("no new leader")?;
        let a = retrying("get after failover", || kv.get("jobs/a")).await?;
        ensure!(a.as_ref().map(|e| e.value.as_slice()) == Some(&b"uno"[..]), "{a:?}");
        ensure!(a.map(|e| e.version) == Some(v2), "version kept");
        let listed = retrying("list after failover", || kv.list("jobs/")).await?;
        let keys: Vec<_> = listed.iter().map(|e| e.key.as_str()).collect();
        ensure!(keys == ["jobs/a", "jobs/b"], "{keys:?}");
        retrying("put after failover", || kv.put("jobs/c", b"four".to_vec())).await?;
        ensure!(retrying("delete", || kv.delete("other")).await?, "other existed");
        c.restart_master(leader).await?;

        // Teardown removes the namespace from the replicated registry.
        s.teardown().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = c.wait_leader().await?;
            let reg = c.get(&c.masters[leader].addr, "/raft/registry").await?;
            let gone = reg["frameworks"].get(&fid).is_none();
            if gone && reg["kv"].get(&fid).is_none() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "namespace left after teardown: {}",
                reg["kv"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
