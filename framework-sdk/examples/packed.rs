//! Runs N `true` tasks packed best-fit over all offers, at most 4 per
//! agent, and keeps the count of finished tasks in the framework's durable
//! key-value namespace.
//! `cargo run -p mezzo-sdk --example packed -- 127.0.0.1:5050 [tasks]`

#![forbid(unsafe_code)]

use mezzo_sdk::offers::{Constraint, Placed, Strategy, TaskRequest, plan};
use mezzo_sdk::{Event, Resources, Scheduler, SchedulerConfig, TaskBuilder, TaskState, task_state};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let master = args.next().unwrap_or_else(|| "127.0.0.1:5050".to_owned());
    let total: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);
    let (scheduler, mut events) = Scheduler::start(SchedulerConfig::new([master], "packed"));
    let need = TaskRequest::new(&Resources::parse("cpus:0.1;mem:16")?);
    let limit = [Constraint::max_per_agent(4)?];
    // Kept for the whole run: where our tasks are, freed as they end.
    let mut placed = Placed::default();
    let (mut todo, mut finished): (Vec<usize>, usize) = ((0..total).rev().collect(), 0);

    while let Some(event) = events.next().await {
        match event {
            Event::Offers(offers) => {
                let work = todo.drain(..).map(|i| (need.clone(), i));
                let p = plan(&offers, work, Strategy::BestFit, &limit, &mut placed)?;
                let done = scheduler
                    .launch(p, &mut placed, Some(5.0), |a| {
                        let t = TaskBuilder::new(format!("t-{}", a.payload)).resources(&a.resources);
                        t.shell("true").build()
                    })
                    .await;
                // What did not fit, or was refused, waits for the next offers.
                todo.extend(done.unplaced);
                todo.extend(done.refused.into_iter().map(|r| r.payload));
            }
            Event::Update(status) => {
                placed.observe(&status);
                match task_state(&status) {
                    Some(TaskState::Finished) => {
                        finished += 1;
                        // Durable progress: survives our restart and a master failover.
                        let kv = scheduler.kv();
                        kv.put("finished", finished.to_string().into_bytes()).await?;
                        if finished == total {
                            break;
                        }
                    }
                    Some(s) if s.is_terminal() => return Err(format!("{} ended {}", status.task_id, s.name()).into()),
                    _ => {}
                }
            }
            Event::Error { message } => return Err(message.into()),
            _ => {}
        }
    }
    println!("{finished} tasks finished");
    scheduler.teardown().await?;
    scheduler.stop().await;
    Ok(())
}
