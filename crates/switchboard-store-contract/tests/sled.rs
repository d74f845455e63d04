//! The storage contract against the sled store, each store in a temporary directory.

mod common;

use switchboard_store_contract::contract_tests;

contract_tests!(common::Sled::default());
