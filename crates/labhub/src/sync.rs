//! sync (under construction).
