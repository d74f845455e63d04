//! Switchboard plugin for smartsupp
