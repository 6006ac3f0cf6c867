//! `steward workitem ...`: command line of work items (database refreshes).

use clap::Subcommand;

use super::JsonFlag;

#[derive(Debug, Subcommand)]
pub enum WorkitemCommand {
    /// Work items, newest first.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
}
