//! TODO: the sqlite backend.
