//! Host side of the `vu` interface: identity, sleep, clock, log, env.

use std::time::Duration;

use crate::bindings::runner::scenario::types::Level;
use crate::bindings::runner::scenario::vu::Host;
use crate::VuState;

/// Longest panic message kept.
const MAX_PANIC_MESSAGE: usize = crate::limits::sizes::MESSAGE;

impl Host for VuState {
    async fn id(&mut self) -> wasmtime::Result<u32> {
        Ok(self.vu_id)
    }

    async fn class_name(&mut self) -> wasmtime::Result<String> {
        Ok(self.class.to_string())
    }

    async fn iteration(&mut self) -> wasmtime::Result<u64> {
        Ok(self.iteration)
    }

    async fn sleep(&mut self, time: u64) -> wasmtime::Result<()> {
        let time = Duration::from_nanos(time);
        if time >= crate::fiber_stack::RELEASE_FROM {
            crate::fiber_stack::release();
        }
        tokio::time::sleep(time).await;
        self.resumed();
        Ok(())
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(nanos(self.run.started.elapsed()))
    }

    async fn unix_time(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::messaging::unix_nanos())
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        use crate::limits::sizes;
        let mut lines = message.lines();
        for line in lines.by_ref().take(sizes::LOG_LINES) {
            if line.len() > sizes::LOG_LINE {
                let cut = crate::limits::truncate(line.to_owned(), sizes::LOG_LINE);
                let more = line.len() - (cut.len() - sizes::CUT.len());
                let shown = format!("{cut} ({more} more bytes cut)");
                self.run.log_limit.emit(self.vu_id, level, &shown);
            } else {
                self.run.log_limit.emit(self.vu_id, level, line);
            }
        }
        let rest = lines.count();
        if rest > 0 {
            let note = format!("{} ({rest} more lines cut)", sizes::CUT);
            self.run.log_limit.emit(self.vu_id, level, &note);
        }
        Ok(())
    }

    async fn random_seed(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::seeds::derive(
            self.run.seed,
            self.vu_id,
            crate::seeds::Stream::Guest,
        ))
    }

    async fn env(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.get(&key).cloned())
    }

    async fn panicked(&mut self, mut message: String) -> wasmtime::Result<()> {
        message = crate::limits::truncate(message, MAX_PANIC_MESSAGE);
        self.panic_message = Some(message);
        Ok(())
    }
}

/// A duration in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
