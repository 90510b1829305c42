//! The ticker: a thread that runs every log's periodic work (interval fsync, recovery checkpoint,
//! roll by age, retention) via `Log::tick`.

use super::{Broker, BrokerError, now_ms};
use std::{
    sync::{Arc, Condvar, Mutex, Weak},
    thread::JoinHandle,
    time::Duration,
};

pub(crate) struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Ticker {
    pub(crate) fn start(broker: Weak<Broker>, interval: Duration) -> Result<Ticker, BrokerError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("strata-ticker".into())
            .spawn(move || run(&broker, interval, &signal))
            .map_err(|e| BrokerError::io("spawn the ticker thread", "", e))?;
        Ok(Ticker { stop, thread })
    }

    /// Asks the thread to stop without waiting for it.
    pub(crate) fn signal_stop(&self) {
        let (flag, cvar) = &*self.stop;
        *flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cvar.notify_all();
    }

    /// Stops the thread and waits until it has.
    pub(crate) fn stop(self) {
        self.signal_stop();
        if self.thread.join().is_err() {
            tracing::error!("the ticker thread panicked");
        }
    }
}

fn run(broker: &Weak<Broker>, interval: Duration, stop: &(Mutex<bool>, Condvar)) {
    let (flag, cvar) = stop;
    loop {
        {
            let guard = flag
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (guard, _) = cvar
                .wait_timeout_while(guard, interval, |stopped| !*stopped)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        broker.tick(now_ms());
    }
}
