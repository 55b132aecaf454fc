pub mod inspect;
pub mod diff;
