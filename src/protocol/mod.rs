//! Sans-IO chat protocol (placeholder, replaced by the protocol work).
