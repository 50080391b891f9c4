//! filelock (under construction).
