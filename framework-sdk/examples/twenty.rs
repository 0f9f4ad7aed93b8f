// Twenty tasks, at most four per agent; task 7 fails its first attempt and
// is retried once; every item reports one outcome; then teardown. Masters
// from the command line, else the client configuration file.
use std::time::Duration;

use mezzo_sdk::offers::{Constraint, TaskRequest};
use mezzo_sdk::{Change, Event, Resources, RetryPolicy, Scheduler, SchedulerConfig, WorkQueue};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let masters: Vec<String> = std::env::args().skip(1).collect();
    twenty(SchedulerConfig::new(masters, "twenty")).await
}

async fn twenty(config: SchedulerConfig) -> Result<(), Box<dyn std::error::Error>> {
    let (scheduler, mut events) = Scheduler::start(config);
    let mut queue = WorkQueue::new("twenty", RetryPolicy::attempts(2)).constraints(vec![Constraint::max_per_agent(4)?]);
    let need = TaskRequest::new(&Resources::parse("cpus:0.1;mem:32")?);
    for i in 0..20 {
        queue.submit(i, need.clone());
    }
    // Item 7's first attempt (task id twenty-7-1) fails.
    let script = |i: &u32| match i {
        7 => "test \"$MEZZO_TASK_ID\" != twenty-7-1".to_owned(),
        i => format!("echo task {i}"),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !queue.is_empty() {
        tokio::select! {
            Some(event) = events.next() => match event {
                Event::Offers(offers) => {
                    queue.offers(&scheduler, offers, |i, t| t.shell(script(i)), Instant::now()).await;
                }
                Event::Update(status) => {
                    if let Some(done) = queue.update(&status, Instant::now()).and_then(Change::ended) {
                        let how = if done.succeeded() { "succeeded" } else { "failed" };
                        println!("item {} {how} after {} attempt(s)", done.payload, done.attempts);
                    }
                }
                Event::Error { message } => return Err(message.into()),
                _ => {}
            },
            _ = tick.tick() => queue.tick(&scheduler, Instant::now()).await,
        }
    }
    scheduler.teardown().await?; // returns once the master confirms
    scheduler.stop().await;
    Ok(())
}
