//! Runs N `true` tasks packed best-fit over all offers, and keeps the count
//! of finished tasks in the framework's durable key-value namespace.
//! `cargo run -p mezzo-sdk --example packed -- 127.0.0.1:5050 [tasks]`

#![forbid(unsafe_code)]

use mezzo_sdk::offers::{Placed, Strategy, TaskRequest, pack};
use mezzo_sdk::{Event, Resources, Scheduler, SchedulerConfig, TaskBuilder, TaskState, task_state};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let master = args.next().unwrap_or_else(|| "127.0.0.1:5050".to_owned());
    let total: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);
    let (scheduler, mut events) = Scheduler::start(SchedulerConfig::new([master], "packed"));
    let need = TaskRequest::new(Resources::parse("cpus:0.1;mem:16")?);
    let (mut launched, mut finished) = (0, 0);

    while let Some(event) = events.next().await {
        match event {
            Event::Offers(offers) => {
                let wanted = vec![need.clone(); total - launched];
                let packing = pack(&offers, &wanted, Strategy::BestFit, &[], &mut Placed::default())?;
                for (offer, placed) in packing.by_offer() {
                    let tasks: Vec<_> = placed
                        .iter()
                        .map(|p| TaskBuilder::new(format!("t-{}", launched + p.request)).resources(&p.resources))
                        .map(|t| t.shell("true").build())
                        .collect();
                    scheduler
                        .accept(vec![offers[offer].offer_id.clone()], tasks, None)
                        .await?;
                }
                launched += packing.placements.len();
                let unused = packing.unused_offers(offers.len());
                let unused: Vec<_> = unused.into_iter().map(|i| offers[i].offer_id.clone()).collect();
                if !unused.is_empty() {
                    scheduler.decline(unused, Some(5.0)).await?;
                }
            }
            Event::Update(status) => match task_state(&status) {
                Some(TaskState::Finished) => {
                    finished += 1;
                    // Durable progress: survives our restart and a master failover.
                    scheduler
                        .kv()
                        .put("finished", finished.to_string().into_bytes())
                        .await?;
                    if finished == total {
                        break;
                    }
                }
                Some(s) if s.is_terminal() => return Err(format!("{} ended {}", status.task_id, s.name()).into()),
                _ => {}
            },
            Event::Error { message } => return Err(message.into()),
            _ => {}
        }
    }
    println!("{finished} tasks finished");
    scheduler.teardown().await?;
    scheduler.stop().await;
    Ok(())
}
