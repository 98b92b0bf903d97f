//! The fan-out assistant: a second thread that writes half of a big round while the publisher
//! writes the other half.
//!
//! With one runtime worker (the default), a lone line to a big room is written by one thread, one
//! `writev` per member, about 2.7 µs each on loopback: the last of 200 members gets it half a
//! millisecond after the first. The delivery path before this one woke every member's task and
//! let the runtime's second worker steal half of them, which wrote the room from both cores, at
//! a wake-up per member. Here it costs one wake-up per round: the publisher hands one shard of
//! the round to this thread ([`Assistant::try_hand`]), writes its own, then takes the job back if
//! the assistant has not started it ([`Assistant::take_back`]), so a busy machine never makes a
//! member wait longer than if the publisher had written everything itself.
//!
//! Only rounds that carry little to many members are handed over (see `hub::deliver`): in a
//! flood every member's copies of a line share one reference count, and two cores taking turns
//! on it cost more than the second core saves.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

/// Work handed to the assistant: one shard of one round.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// The daemon's assistant, if it has one (see [`enable_fanout_assistant`]).
static ASSISTANT: OnceLock<Assistant> = OnceLock::new();

/// Starts the fan-out assistant (the daemon, with one runtime worker on a machine with more
/// than one core). Rooms made after this split their members into one more shard, the
/// assistant's. False if the thread could not be started (delivery then stays on the workers).
pub(crate) fn enable_fanout_assistant() -> bool {
    if ASSISTANT.get().is_some() {
        return true;
    }
    match Assistant::start() {
        Ok(a) => {
            let _ = ASSISTANT.set(a);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the fan-out thread; one thread writes every round");
            false
        }
    }
}

/// The daemon's assistant, if enabled.
pub(super) fn assistant() -> Option<&'static Assistant> {
    ASSISTANT.get()
}

#[derive(Default)]
struct State {
    /// Handed over and not yet started.
    job: Option<Job>,
    /// A job is running.
    busy: bool,
    /// The handle was dropped: the thread ends.
    stop: bool,
}

/// A thread that runs one job at a time, handed over only when it is free.
pub(super) struct Assistant {
    state: Arc<Mutex<State>>,
    thread: Thread,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Jobs run outside the lock, so a panic in one never poisons it mid-update.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Assistant {
    pub(super) fn start() -> std::io::Result<Assistant> {
        let state = Arc::new(Mutex::new(State::default()));
        let theirs = state.clone();
        let handle = std::thread::Builder::new()
            .name("groupchatd-fanout".into())
            .spawn(move || serve(&theirs))?;
        Ok(Assistant {
            state,
            thread: handle.thread().clone(),
        })
    }

    /// Hands `job` over if the assistant is free; gives it back otherwise.
    pub(super) fn try_hand(&self, job: Job) -> Result<(), Job> {
        let mut st = lock(&self.state);
        if st.busy || st.job.is_some() {
            return Err(job);
        }
        st.job = Some(job);
        drop(st);
        self.thread.unpark();
        Ok(())
    }

    /// The job handed over, if the assistant has not started it yet.
    pub(super) fn take_back(&self) -> Option<Job> {
        lock(&self.state).job.take()
    }
}

impl Drop for Assistant {
    fn drop(&mut self) {
        lock(&self.state).stop = true;
        self.thread.unpark();
    }
}

/// The assistant's loop: runs each job handed over, parks in between.
fn serve(state: &Mutex<State>) {
    loop {
        let job = {
            let mut st = lock(state);
            if st.stop {
                return;
            }
            match st.job.take() {
                Some(job) => {
                    st.busy = true;
                    job
                }
                None => {
                    drop(st);
                    // A wake-up that came before this park makes it return at once.
                    std::thread::park();
                    continue;
                }
            }
        };
        job();
        lock(state).busy = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_job_runs_on_the_assistant_thread_one_at_a_time() {
        let a = Assistant::start().expect("thread");
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = tx.clone();
        let first: Job = Box::new(move || {
            t.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
            go_rx.recv_timeout(WAIT).unwrap();
        });
        assert!(a.try_hand(first).is_ok());
        let name = rx.recv_timeout(WAIT).expect("the job ran");
        assert_eq!(name.as_deref(), Some("groupchatd-fanout"));
        // Busy: the next job comes back to its caller, who runs it itself.
        let second: Job = Box::new(move || tx.send(Some("caller".into())).unwrap());
        let second = a.try_hand(second).expect_err("busy");
        second();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().as_deref(), Some("caller"));
        go_tx.send(()).unwrap();
        // Free again once the first has finished (bounded wait for the thread to notice).
        let deadline = std::time::Instant::now() + WAIT;
        let (tx, rx) = mpsc::channel();
        let mut job: Job = Box::new(move || tx.send(()).unwrap());
        loop {
            match a.try_hand(job) {
                Ok(()) => break,
                Err(back) => job = back,
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the assistant never got free"
            );
            std::thread::yield_now();
        }
        rx.recv_timeout(WAIT).expect("the third job ran");
    }

    #[test]
    fn a_job_not_started_can_be_taken_back_and_nothing_else_is_taken_meanwhile() {
        // An assistant whose thread never serves (this one): every job stays not started.
        let a = Assistant {
            state: Arc::new(Mutex::new(State::default())),
            thread: std::thread::current(),
        };
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        assert!(a.try_hand(Box::new(move || t.send(1).unwrap())).is_ok());
        // One job at a time: a second is given back while the first waits.
        let second = a
            .try_hand(Box::new(move || tx.send(2).unwrap()))
            .expect_err("one job at a time");
        let first = a.take_back().expect("not started");
        assert!(a.take_back().is_none(), "taken back once");
        first();
        second();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
        // Free again once taken back.
        assert!(a.try_hand(Box::new(|| {})).is_ok());
        lock(&a.state).job = None;
        lock(&a.state).stop = true;
    }
}
