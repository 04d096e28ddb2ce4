//! TODO (being written): admin-side commands.
