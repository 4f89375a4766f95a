//! (placeholder — being written)
