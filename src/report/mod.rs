pub mod diff;
pub mod format;
pub mod inspect;
