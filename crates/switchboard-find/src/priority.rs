//! The finder's threads run behind ingest: a lower scheduling priority (a higher nice value).
//!
//! On a machine whose cores are all busy, every thread the finder runs (its task, the index's
//! blocking work, tantivy's indexing and merging threads) waits for the threads that
//! acknowledge webhooks, rather than the other way round: the index lags under a burst and
//! catches up after it. Measured on the 2-core bench machine (BENCHMARKS.md, session 12): with
//! the finder's threads at nice 10, +12 to +23 % webhooks/s over HTTP in three alternating
//! pairs, and a p99 of about 20 ms against 25-37 ms.
//!
//! Linux keeps a nice value per thread and a new thread starts with its creator's, so a thread
//! lowered here passes it on to the threads it starts (tantivy's among them).

/// How much lower than the process the finder's threads run (nice values go up to 19).
pub const FINDER_NICE: i32 = 10;

/// Lowers the calling thread to [`FINDER_NICE`] below the process's main thread (nice 19 at
/// most); a thread lowered already, or started by one, stays where it is. Only a preference:
/// where the system refuses it, the thread runs on at its priority.
pub fn lower_this_thread() {
    // On Linux the nice value of a process id is its main thread's, and `None` names the
    // calling thread.
    let priorities = rustix::process::getpriority_process(Some(rustix::process::getpid()))
        .and_then(|main| Ok((main, rustix::process::getpriority_process(None)?)));
    let (main, current) = match priorities {
        Ok(priorities) => priorities,
        Err(error) => {
            tracing::debug!(%error, "the finder's thread priority could not be read");
            return;
        }
    };
    let lower = main.saturating_add(FINDER_NICE).min(19);
    if lower > current
        && let Err(error) = rustix::process::setpriority_process(None, lower)
    {
        tracing::debug!(%error, "the finder's thread priority could not be lowered");
    }
}

/// The nice value of thread `tid` of this process, from `/proc` (for tests and diagnostics).
pub fn nice_of_thread(tid: &str) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, nice is field 19.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// The calling thread's nice value, from `/proc` (for tests and diagnostics).
pub fn nice_of_this_thread() -> Option<i32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    nice_of_thread(&link.file_name()?.to_string_lossy())
}

/// The threads of this process whose name starts with `prefix`, with their nice values.
pub fn threads_named(prefix: &str) -> Vec<(String, i32)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid = task.file_name().to_string_lossy().into_owned();
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let name = name.trim_end().to_owned();
            if !name.starts_with(prefix) {
                return None;
            }
            Some((name, nice_of_thread(&tid)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        nice_of_this_thread().expect("nice value")
    }

    #[test]
    fn a_lowered_thread_and_the_threads_it_starts_run_lower_and_others_do_not() {
        let before = own_nice();
        let (lowered, child) = std::thread::spawn(|| {
            lower_this_thread();
            let lowered = own_nice();
            // The child inherits the value; lowering it again changes nothing.
            let child = std::thread::spawn(|| {
                let inherited = own_nice();
                lower_this_thread();
                assert_eq!(own_nice(), inherited, "lowered twice");
                inherited
            })
            .join()
            .expect("child");
            (lowered, child)
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (before + FINDER_NICE).min(19));
        assert_eq!(child, lowered);
        assert_eq!(own_nice(), before, "only the calling thread is lowered");
    }
}
