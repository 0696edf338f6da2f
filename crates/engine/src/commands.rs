//! The engine's commands, one module per verb.

pub(crate) mod backup;
pub(crate) mod restore;
pub(crate) mod stats;
