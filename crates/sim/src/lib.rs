//! `iewatch-sim`: a faithful Azure Import/Export and Data Box service ([`simulator`]:
//! classic Service Management, Resource Manager with its Entra ID token endpoint, faults
//! and scenarios) and the [`demo`] that runs the daemon against it. Tests, benchmarks,
//! `iewatch simulate` and `iewatch demo` use it; the daemon library (`iewatch-core`)
//! does not, so certificate generation and the simulator's crypto are not in it.

pub mod demo;
pub mod simulator;
