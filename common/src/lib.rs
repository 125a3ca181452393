//! Small pieces every rmfs role shares.
