//! The job scheduler: every second it makes the jobs of the schedules that are due, with their
//! auto pools and manager tasks (each once, however many monitors run it: `run_schedule.lua`
//! is fenced by the schedule's run count).

use drover_core::status::StatusStore;
use drover_core::Config;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(config: Config, store: StatusStore, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match drover_core::actions::run_due_schedules(&config, &store, drover_core::model::now_ms()).await {
            Ok(made) => {
                for job in made {
                    tracing::info!(%job, "scheduled job made");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot run the job schedules"),
        }
    }
}
