//! TODO (being written): bollard connection with API version negotiation.
