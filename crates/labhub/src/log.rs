//! log (under construction).
