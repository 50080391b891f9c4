//! lifecycle (under construction).
