//! The HTTP side of a push: verify the sender, parse the payload, filter the
//! images, store them, answer.

pub mod counters;
pub mod formats;
pub mod routes;
pub mod source;
pub mod verify;
