//! The namespace state machine.
