//! Pure builders, one per child object.
