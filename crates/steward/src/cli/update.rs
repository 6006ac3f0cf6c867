//! `steward update ...`: command line of release updates.

use clap::Subcommand;

use super::JsonFlag;

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// The updates available to an instance, and its scheduled update.
    List {
        /// The instance.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}
