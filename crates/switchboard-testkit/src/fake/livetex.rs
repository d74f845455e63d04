//! Fake livetex API server (to be filled by the livetex connector work).
