//! The second stage: flush and fsync applied groups, then answer them.

use super::*;

/// The second stage: flushes and fsyncs applied groups in order, then answers their requests
/// and moves the durable head. Several groups waiting together share one flush.
pub(crate) struct Flusher {
    pub(crate) db: sled::Db,
    /// The log entries' segment files: synced before sled, so that no acknowledged pointer
    /// reaches the disk without its bytes.
    pub(crate) log: Arc<LogFiles>,
    pub(crate) files: DurableFiles,
    /// The last durable sequence.
    pub(crate) head: u64,
    pub(crate) head_tx: Arc<watch::Sender<Sequence>>,
    pub(crate) failed: Failure,
    /// The newest durable events, for subscribers tailing the log.
    pub(crate) tail: Arc<TailCache>,
    /// Told when the conversations a group wrote are durable.
    pub(crate) projection: Arc<Projection>,
    /// How often sled is flushed ([`crate::StoreOptions::sled_flush_interval`]).
    pub(crate) sled_interval: std::time::Duration,
    /// When sled was last flushed, and whether groups were applied since.
    pub(crate) sled_flushed: Instant,
    pub(crate) sled_dirty: bool,
}

impl Flusher {
    pub(super) fn run(
        mut self,
        staged: std::sync::mpsc::Receiver<Staged>,
    ) -> Result<(), StoreError> {
        loop {
            let wait = self
                .sled_interval
                .saturating_sub(self.sled_flushed.elapsed());
            let first = match staged.recv_timeout(wait) {
                Ok(first) => first,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: sled catches up with the journal.
                    if self.sled_dirty && self.failed.get().is_none() {
                        if let Err(reason) = self.flush_sled() {
                            error!(error = %reason, "flushing sled failed; refusing further writes");
                            self.failed.set(reason);
                        }
                    } else {
                        self.sled_flushed = Instant::now();
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut groups = vec![first];
            groups.extend(staged.try_iter());
            self.make_durable(groups);
        }
        if self.failed.get().is_some() {
            return Ok(());
        }
        self.sync_log()
            .map_err(|e| StoreError::io("the final fsync of the log's segment files", e))?;
        self.log.trim()?;
        self.db.flush().map_err(StoreError::from).and_then(|_| {
            self.files
                .sync()
                .map_err(|e| StoreError::io("the final fsync of the store", e))
        })
    }

    fn sync_log(&self) -> io::Result<()> {
        if self.files.enabled {
            self.log.sync()
        } else {
            Ok(())
        }
    }

    /// Flushes sled and fdatasyncs its file.
    fn flush_sled(&mut self) -> Result<(), String> {
        self.db.flush().map_err(|e| format!("flushing: {e}"))?;
        self.files.sync().map_err(|e| format!("fdatasync: {e}"))?;
        self.sled_flushed = Instant::now();
        self.sled_dirty = false;
        Ok(())
    }

    /// Makes `groups` (applied in this order) durable, then answers them: one fdatasync of the
    /// segment files, which hold their log entries and journal records (see [`journal`]);
    /// sled's flush too when one of them is a barrier or the last flush is
    /// [`crate::StoreOptions::sled_flush_interval`] old.
    pub(crate) fn make_durable(&mut self, groups: Vec<Staged>) {
        self.sled_dirty = true;
        let flush_sled = groups.iter().any(|group| group.barrier)
            || self.sled_flushed.elapsed() >= self.sled_interval;
        let durable = match self.failed.get() {
            Some(reason) => Err(reason),
            None => self
                .sync_log()
                .map_err(|e| format!("fdatasync of the log's segment files: {e}"))
                .and_then(|()| {
                    if flush_sled {
                        self.flush_sled()
                    } else {
                        Ok(())
                    }
                }),
        };
        if let Err(reason) = durable {
            // sled may hold part or all of these groups in memory without them being on disk:
            // the only safe answer is to refuse every write until an operator restarts.
            error!(error = %reason, groups = groups.len(), "group commit failed; refusing further writes");
            self.failed.set(reason.clone());
            for group in groups {
                for command in group.commands {
                    command.fail(|| StoreError::Failed(reason.clone()));
                }
            }
            return;
        }
        let Some(last) = groups.last() else {
            return;
        };
        let new_head = last.head;
        // Into the tail cache before the head announces them, so woken readers find them.
        if self.tail.capacity() > 0 {
            self.tail
                .push(groups.iter().flat_map(Staged::new_events).collect());
            // Erased events replace the copies held, before anyone is told of the erasure.
            for group in &groups {
                self.tail.replace(&group.rewritten);
            }
        }
        // Before the head moves, so that a reader who sees the new head and finds the
        // conversations written finds them durable.
        if let Some(projected) = groups.iter().filter_map(|group| group.projected).max() {
            self.projection.publish(projected);
        }
        if new_head != self.head {
            self.head = new_head;
            self.head_tx.send_replace(Sequence(new_head));
        }
        for group in groups {
            let seconds = group.started.elapsed().as_secs_f64();
            metrics::histogram!("switchboard_store_batch_size").record(group.appended as f64);
            metrics::histogram!("switchboard_store_commit_seconds").record(seconds);
            metrics::counter!("switchboard_events_appended_total").increment(group.appended);
            debug!(
                requests = group.commands.len(),
                appended = group.appended,
                head = group.head,
                micros = (seconds * 1e6) as u64,
                "group commit"
            );
            for (command, outcome) in group.commands.into_iter().zip(group.receipts) {
                command.answer(outcome);
            }
        }
    }
}
