//! Linux implementation of the platform layer.
