//! Switchboard plugin for livetex
