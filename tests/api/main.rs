//! One integration-test binary: the real app on port 0, spoken to over HTTP.

mod helpers;
mod webhooks;
