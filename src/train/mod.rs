//! Training (placeholder).
