//! The tier-conversion state machine (pure).
