//! DESIGN.md "Allocator" and "Durable state (Raft)" through the real
//! master: quota guarantees against a framework that hoards offers, and
//! dynamic reservations (through Accept and the operator API) that survive
//! a leader failover.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::v1;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use mezzo_sdk::{Event, Scheduler};
use mezzo_tests::{Cluster, ClusterSpec, fw};
use serde_json::{Value, json};

/// Subscribes a framework in `roles`.
async fn subscribe_in(c: &Cluster, name: &str, roles: &[&str]) -> Result<(Scheduler, fw::Inbox, String)> {
    let mut cfg = c.sdk_config(name);
    cfg.framework.failover_timeout_secs = 60.0;
    cfg.framework.roles = roles.iter().map(|r| r.to_string()).collect();
    let (s, ev) = Scheduler::start(cfg);
    let mut inbox = fw::Inbox::new(ev);
    let id = inbox
        .next(Duration::from_secs(10), |e| match e {
            Event::Subscribed { framework_id, .. } => Some(framework_id.clone()),
            _ => None,
        })
        .await?;
    Ok((s, inbox, id))
}

/// Sends an operator request, as `user:admin`, to the leader.
async fn operator(c: &Cluster, method: reqwest::Method, path: &str, body: Value) -> Result<(u16, Value)> {
    let leader = c.wait_leader().await?;
    let addr = c.masters().into_iter().nth(leader).context("the leader")?;
    let resp = c.http().request(method, c.url(&addr, path)).json(&body).send().await?;
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

fn offered(o: &v1::Offer) -> Result<ReservedResources> {
    Ok(ReservedResources::from_proto(&o.resources)?)
}

/// DESIGN.md "Allocator": two frameworks in different roles, a quota on
/// one. The other framework holds every offer and never declines; once
/// the quota is set and its role's framework arrives, offers are taken
/// back from the hoarder and the quota'd role gets its guarantee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_role_gets_its_guarantee_from_a_hoarder() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 2,
        agent_resources: "cpus:4;mem:4096;disk:1000".into(),
        ..Default::default()
    })
    .await?;
    let result = async {
        let (_hoarder, mut hev, hid) = subscribe_in(&c, "hoarder", &["*"]).await?;
        // The hoarder is offered both agents and keeps the offers.
        let mut held = 0;
        while held < 2 {
            held += hev
                .next(Duration::from_secs(10), |e| match e {
                    Event::Offers(o) => Some(o.len()),
                    _ => None,
                })
                .await?;
        }
        // Bad input is refused with the reason, and changes nothing.
        for (method, path, body, why) in [
            (
                reqwest::Method::PUT,
                "/quota",
                json!({"role": "eng", "guarantee": "cpus:-1"}),
                "negative",
            ),
            (
                reqwest::Method::PUT,
                "/quota",
                json!({"role": "eng", "guarantee": "gpus:1"}),
                "unknown resource",
            ),
            (
                reqwest::Method::PUT,
                "/quota",
                json!({"role": "eng", "guarantee": "cpus:4", "limit": "cpus:2"}),
                "above its limit",
            ),
            (
                reqwest::Method::PUT,
                "/quota",
                json!({"role": "eng//x", "limit": "cpus:1"}),
                "each part",
            ),
            (reqwest::Method::PUT, "/weights", json!({"eng": -2}), "from 1e-6"),
            (
                reqwest::Method::PUT,
                "/weights",
                json!({"eng": "heavy"}),
                "role to weight",
            ),
        ] {
            let (status, v) = operator(&c, method, path, body.clone()).await?;
            ensure!(status == 400 && v.to_string().contains(why), "{body}: {status} {v}");
        }
        let (status, v) = operator(
            &c,
            reqwest::Method::PUT,
            "/quota",
            json!({"role": "eng", "guarantee": "cpus:3;mem:3072"}),
        )
        .await?;
        ensure!(status == 200, "quota refused: {status} {v}");
        let (_eng, mut eev, eid) = subscribe_in(&c, "eng", &["eng"]).await?;
        let mut got = ReservedResources::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(got.total().cpus.0 >= 3000 && got.total().mem.0 >= 3072) {
            ensure!(Instant::now() < deadline, "eng got only {got} within 20 s");
            let offers = eev
                .next(Duration::from_secs(20), |e| match e {
                    Event::Offers(o) => Some(o.clone()),
                    _ => None,
                })
                .await?;
            for o in offers {
                ensure!(o.allocation_role == "eng", "offer to role {:?}", o.allocation_role);
                got.add(&offered(&o)?);
            }
        }
        // The hoarder was told its offers were taken back.
        hev.next(Duration::from_secs(5), |e| {
            matches!(e, Event::Rescind { .. }).then_some(())
        })
        .await
        .context("the hoarder saw no rescind")?;
        let st = c.master_state().await?;
        let roles = st["allocation"]["roles"].as_array().context("roles")?;
        let eng = roles.iter().find(|r| r["role"] == "eng").context("role eng")?;
        ensure!(eng["allocated"]["cpus"].as_f64() >= Some(3.0), "eng in /state: {eng}");
        ensure!(
            eng["frameworks"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == &json!(eid))),
            "eng's framework not listed: {eng}"
        );
        let star = roles.iter().find(|r| r["role"] == "*").context("role *")?;
        ensure!(
            star["frameworks"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == &json!(hid))),
            "{star}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The leader's address (the one answering /state itself).
async fn leader_addr(c: &Cluster) -> Result<String> {
    let i = c.wait_leader().await?;
    Ok(c.masters[i].addr.clone())
}

/// DESIGN.md "Durable state": a reservation made through Accept and one
/// made through the operator API are in the registry, offered only to
/// their role, and still there after the leader is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_reservations_survive_a_failover() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec {
        masters: 3,
        agents: 1,
        agent_resources: "cpus:4;mem:4096;disk:1000".into(),
        ..Default::default()
    })
    .await?;
    let result = async {
        let (s, mut ev, fid) = subscribe_in(&c, "eng", &["eng"]).await?;
        let o = ev.offer().await?;
        ensure!(o.allocation_role == "eng");
        let agent = o.agent_id.clone();
        // RESERVE through Accept, over the raw API (the SDK's accept only launches).
        let want = ReservedResources::parse("cpus(eng):1;mem(eng):512")?;
        let mut client = SchedulerClient::new(c.channel(&leader_addr(&c).await?).await?);
        let op = v1::Operation {
            operation: Some(v1::operation::Operation::Reserve(v1::Reserve {
                resources: want.to_proto(),
            })),
        };
        client
            .accept(v1::AcceptRequest {
                framework_id: fid.clone(),
                offer_ids: vec![o.offer_id.clone()],
                operations: vec![op],
                filters: None,
            })
            .await
            .context("accept with reserve")?;
        // Bad input: reserving for another role, or more than was offered.
        let o2 = ev.offer().await?;
        for (bad, why) in [("cpus(ops):1", "offer's role"), ("cpus(eng):100", "not among")] {
            let op = v1::Operation {
                operation: Some(v1::operation::Operation::Reserve(v1::Reserve {
                    resources: ReservedResources::parse(bad)?.to_proto(),
                })),
            };
            let err = client
                .accept(v1::AcceptRequest {
                    framework_id: fid.clone(),
                    offer_ids: vec![o2.offer_id.clone()],
                    operations: vec![op],
                    filters: None,
                })
                .await
                .expect_err(bad);
            ensure!(err.message().contains(why), "{bad}: {}", err.message());
        }
        // Through the operator API, on a follower (redirected).
        let (status, v) = operator(
            &c,
            reqwest::Method::POST,
            "/reserve",
            json!({"agent": agent, "resources": "cpus(ops):1;mem(ops):256"}),
        )
        .await?;
        ensure!(status == 200, "reserve refused: {status} {v}");
        // Bad input through the operator API.
        for (body, code, why) in [
            (
                json!({"agent": agent, "resources": "cpus(ops):100"}),
                400,
                "cannot reserve",
            ),
            (json!({"agent": agent, "resources": "cpus:1"}), 400, "must name a role"),
            (
                json!({"agent": "nope", "resources": "cpus(ops):1"}),
                404,
                "unknown agent",
            ),
            (
                json!({"agent": agent, "resources": "cpus(bad role):1"}),
                400,
                "each part",
            ),
        ] {
            let (status, v) = operator(&c, reqwest::Method::POST, "/reserve", body.clone()).await?;
            ensure!(status == code && v.to_string().contains(why), "{body}: {status} {v}");
        }
        let (status, v) = operator(
            &c,
            reqwest::Method::POST,
            "/unreserve",
            json!({"agent": agent, "resources": "cpus(ops):3"}),
        )
        .await?;
        ensure!(
            status == 400 && v.to_string().contains("not dynamically reserved"),
            "{status} {v}"
        );

        let expect = |st: &Value| -> bool {
            let r = &st["agents"][0]["resources_by_role"]["reserved"];
            r["eng"]["cpus"].as_f64() == Some(1.0) && r["ops"]["cpus"].as_f64() == Some(1.0)
        };
        c.wait_master("both reservations applied", expect).await?;

        // Kill the leader; the new one rebuilds the reservations from the registry.
        let old = c.wait_leader().await?;
        c.masters[old].kill().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = c.leader().await
                && i != old
                && let Ok(st) = c.get(&c.masters[i].addr, "/state").await
                && st["agents"].as_array().is_some_and(|a| !a.is_empty())
                && expect(&st)
            {
                let rsv = &st["allocation"]["reservations"][&agent];
                ensure!(
                    rsv.as_str()
                        .is_some_and(|s| s.contains("cpus(eng):1") && s.contains("cpus(ops):1")),
                    "registry reservations after failover: {rsv}"
                );
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the new leader does not show the reservations: {}",
                    c.master_state().await?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The eng framework (which followed the new leader) is offered
        // eng's reservation; it declines everything for a minute, so that
        // a framework in * can be offered the rest.
        let deadline = Instant::now() + Duration::from_secs(20);
        let eng = Role::parse("eng")?;
        let mut found = false;
        loop {
            let offers = ev
                .next(Duration::from_secs(20), |e| match e {
                    Event::Offers(o) => Some(o.clone()),
                    _ => None,
                })
                .await?;
            // Offers of the old leader may still be queued, and declining
            // one succeeds (an offer no longer outstanding is skipped, as
            // Mesos skips it): only an offer the new leader lists counts,
            // and the loop ends once eng holds none of its offers (else
            // the one still queued would keep the rest from the framework
            // in *).
            let st = c.get(&leader_addr(&c).await?, "/state").await?;
            let listed = |id: &str| st["offers"].as_array().is_some_and(|l| l.iter().any(|o| o["id"] == id));
            for o in &offers {
                let current = listed(&o.offer_id);
                let declined = s.decline(vec![o.offer_id.clone()], Some(60.0)).await;
                // (The SDK may still be on its way to the new leader.)
                ensure!(declined.is_ok() || !current, "declining {}: {declined:?}", o.offer_id);
                found |=
                    current && declined.is_ok() && offered(o)?.reserved.get(&eng).is_some_and(|e| e.cpus.0 == 1000);
            }
            let st = c.get(&leader_addr(&c).await?, "/state").await?;
            let held = st["frameworks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["id"] == fid.as_str() && f["outstanding_offers"].as_u64().is_some_and(|n| n > 0));
            if found && !held {
                break;
            }
            ensure!(Instant::now() < deadline, "eng was never offered its reservation");
        }
        // A framework in role * is offered only the unreserved part.
        let (_star, mut sev, _) = subscribe_in(&c, "star", &["*"]).await?;
        let o = sev.offer().await?;
        let r = offered(&o)?;
        ensure!(r.reserved.is_empty(), "reserved resources offered to *: {r}");
        ensure!(r.unreserved.cpus.0 <= 2000, "offered {r} of cpus:4 with 2 reserved");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
