//! Durable files: replace a file so that a crash leaves the old or the
//! new content, never a mix, and make a directory entry survive a crash.
//! A leaf: imports nothing else of the crate (the spool cursor, the window
//! snapshot, the alert state and outbox and the archive all use it).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix: write `<path>.tmp`, sync, rename, sync the
/// directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Syncs a directory, so that files created, renamed or removed in it
/// stay so after a crash. Best effort: a filesystem that cannot sync a
/// directory still keeps the files' own synced contents.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
