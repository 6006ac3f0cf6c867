//! Work items: requested, scheduled operations (database refreshes) and their history.

#[allow(unused_imports)]
use super::*;
