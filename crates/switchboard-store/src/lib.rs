//! The sled store: event log, dedup index, projections, group commit
