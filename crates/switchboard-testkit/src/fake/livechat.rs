//! Fake livechat API server (to be filled by the livechat connector work).
