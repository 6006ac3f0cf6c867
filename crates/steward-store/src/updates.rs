//! Updates: scheduled release updates of instances, their windows, approvals, stages,
//! rehearsals and timeline.

#[allow(unused_imports)]
use super::*;
