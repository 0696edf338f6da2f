//! The engine's commands, one module per verb. Each is a leaf: it uses the
//! repository services ([`crate::services`]) and never another command.

pub(crate) mod backup;
pub(crate) mod check;
pub(crate) mod dump;
pub(crate) mod forget;
pub(crate) mod lock;
pub(crate) mod prune;
pub(crate) mod repair;
pub(crate) mod report;
pub(crate) mod restore;
pub(crate) mod snapshots;
pub(crate) mod stats;
