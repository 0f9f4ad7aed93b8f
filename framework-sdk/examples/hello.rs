//! Runs `echo hello` tasks, waits for them to finish, then tears down.
//! `cargo run -p mezzo-sdk --example hello -- 127.0.0.1:5050 [tasks]`

#![forbid(unsafe_code)]

use mezzo_sdk::{Event, Resources, Scheduler, SchedulerConfig, TaskBuilder, TaskState, task_state};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let master = args.next().unwrap_or_else(|| "127.0.0.1:5050".to_owned());
    let total: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(3);
    let (scheduler, mut events) = Scheduler::start(SchedulerConfig::new([master], "hello"));
    let need = Resources::parse("cpus:0.1;mem:32")?;
    let (mut launched, mut finished) = (0, 0);

    while let Some(event) = events.next().await {
        match event {
            Event::Subscribed { framework_id, .. } => println!("registered as {framework_id}"),
            Event::Offers(offers) => {
                for offer in offers {
                    let mut left = Resources::from_proto(&offer.resources)?;
                    let mut tasks = Vec::new();
                    while launched < total && left.contains(&need) {
                        left = left.checked_sub(&need).ok_or("contains() said it fits")?;
                        let task = TaskBuilder::new(format!("hello-{launched}")).resources(&need);
                        tasks.push(task.shell("echo hello").build());
                        launched += 1;
                    }
                    let result = if tasks.is_empty() {
                        scheduler.decline(vec![offer.offer_id], Some(30.0)).await
                    } else {
                        scheduler.accept(vec![offer.offer_id], tasks, None).await
                    };
                    if let Err(e) = result {
                        eprintln!("offer call failed: {e}");
                    }
                }
            }
            Event::Update(status) => match task_state(&status) {
                Some(TaskState::Finished) => {
                    finished += 1;
                    println!("{} finished ({finished}/{total})", status.task_id);
                    if finished == total {
                        break;
                    }
                }
                Some(s) if s.is_terminal() => return Err(format!("{} ended {}", status.task_id, s.name()).into()),
                _ => {}
            },
            Event::Disconnected { reason } => eprintln!("reconnecting: {reason}"),
            Event::Error { message } => return Err(message.into()),
            _ => {}
        }
    }
    scheduler.teardown().await?;
    scheduler.stop().await;
    Ok(())
}
