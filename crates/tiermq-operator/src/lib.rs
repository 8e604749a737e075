//! tiermq operator library
