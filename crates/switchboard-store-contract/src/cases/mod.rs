//! The cases, one `pub async fn` each. Every case opens its own fresh store(s) from the
//! backend and asserts exact values; a failure names what broke.

mod conversations;
mod erase;
mod events;
mod state;
mod tickets;

pub use conversations::*;
pub use erase::*;
pub use events::*;
pub use state::*;
pub use tickets::*;
