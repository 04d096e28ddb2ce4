//! TODO (being written): `segctl node run`.
