//! Fake smartsupp API server (to be filled by the smartsupp connector work).
