//! Steward's domain: the types that can only hold valid values (instance names, release
//! versions, roles) and the rules every surface calls (who may do what, what may happen to
//! which instance). Nothing here knows HTTP, SQL or the file system layout of the server.

pub mod backup;
pub mod clock;
pub mod drill;
pub mod instance;
pub mod name;
pub mod node;
pub mod notify;
pub mod pitr;
pub mod policy;
pub mod release;
pub mod update;
pub mod verify;
pub mod workitem;

pub use clock::{Clock, ManualClock, SystemClock};
pub use instance::{Engine, InstanceState, InstanceType};
pub use name::{InstanceName, NameError, Username};
pub use policy::{Action, Denied, Role};
pub use release::ReleaseVersion;
