//! duet code generator
