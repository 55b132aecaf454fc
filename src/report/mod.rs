pub mod diff;
pub mod inspect;
