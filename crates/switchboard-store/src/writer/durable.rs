//! The files an append waits for, and the latch that refuses writes after a failed one.

use super::*;

/// The files whose contents must reach the disk before an append is acknowledged: sled's `db`
/// file and any blob files sled wrote for large values (sled never fsyncs those itself).
pub(crate) struct DurableFiles {
    pub(super) dir: PathBuf,
    pub(super) data: File,
    pub(super) synced_blobs: HashSet<OsString>,
    pub(super) enabled: bool,
}

impl DurableFiles {
    /// Opens `<dir>/db` and fsyncs `dir` itself, so that the files sled created are found
    /// after a power loss.
    pub(crate) fn open(dir: &Path, enabled: bool) -> Result<Self, StoreError> {
        let data_path = dir.join("db");
        let data = File::open(&data_path)
            .map_err(|e| StoreError::io(format!("opening {}", data_path.display()), e))?;
        if enabled {
            sync_directory(dir)?;
        }
        Ok(DurableFiles {
            dir: dir.to_owned(),
            data,
            synced_blobs: HashSet::new(),
            enabled,
        })
    }

    /// fdatasyncs the `db` file and every blob file not synced yet (and then the blob directory).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.data.sync_data()?;
        self.sync_new_blobs()
    }

    pub(super) fn sync_new_blobs(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced_blobs.len());
        let mut synced_any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    // sled removed it meanwhile (blob garbage collection).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_any = true;
            }
            present.insert(name);
        }
        if synced_any {
            File::open(&blobs)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

pub(crate) fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsyncing the directory {}", dir.display()), e))
}

/// Set once a write reached sled but may not have reached the disk: from then on every write
/// is refused. Shared by the two stages of the writer.
#[derive(Clone, Default)]
pub(crate) struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, reason: String) {
        let mut failed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // The first failure is the one worth reporting.
        failed.get_or_insert(reason);
    }
}
