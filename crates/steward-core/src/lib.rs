//! Steward's domain: the types that can only hold valid values (instance names, release
//! versions, roles) and the rules every surface calls (who may do what, what may happen to
//! which instance). Nothing here knows HTTP, SQL or the file system layout of the server.

pub mod release;
