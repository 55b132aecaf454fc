//! Verification in tract.
