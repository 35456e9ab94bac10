//! The reliability and security suite (issue 9): faults (SIGKILL loop, HSS
//! outages, a slow HSS), hostile input and security checks, each scenario
//! bounded in time, all traffic on 127.0.0.1. Every scenario prints a one-line
//! summary of its counts (`cargo test --test reliability -- --nocapture`).
//! RELIABILITY.md at the repository root describes each one and its figures.

mod common;

mod reliability {
    mod raw_http;
    mod support;

    mod hostile;
    mod hss_answers;
    mod hss_outage;
    mod hss_slow;
    mod kill_loop;
    mod security;
    mod tls;
}
