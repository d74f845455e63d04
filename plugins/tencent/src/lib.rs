//! Switchboard plugin for tencent
