//! Switchboard plugin for livechat
