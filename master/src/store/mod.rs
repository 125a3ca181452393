//! Storage engine behind our own trait.
