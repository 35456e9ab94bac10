//! TODO: the postgres backend.
