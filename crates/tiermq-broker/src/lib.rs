//! tiermq-broker
