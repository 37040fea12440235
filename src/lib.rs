//! `iewatch`: the command line ([`cli`]) over the daemon library (`iewatch-core`, whose
//! modules are re-exported here as they are: `iewatch::config`, `iewatch::store`, ...)
//! and the service simulator with the demo (`iewatch-sim`: `iewatch::simulator`,
//! `iewatch::demo`). The daemon library does not depend on the simulator; only this
//! crate, which links both into the one binary, does. `docs/DESIGN.md` has the map.

#[macro_use]
extern crate iewatch_core;

pub use iewatch_core::*;
pub use iewatch_sim::{demo, simulator};

pub mod cli;
