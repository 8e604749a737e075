//! tiermq-testkit
