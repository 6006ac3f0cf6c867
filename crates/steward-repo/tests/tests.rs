//! Integration tests of the backup repository, one binary with a module per area.

mod util;

mod backup_restore;
mod bad_input;
mod crash_recovery;
mod drill_verify;
mod encryption;
mod faults;
mod index_cache;
mod restore_cache;
mod restore_paths;
mod s3;
mod segments;
mod verify_prune;
