//! FHIR R4: the data model and the exchange format.
//!
//! phr stores each resource as the JSON value it arrived as and types only the fields it reads
//! ([`model`]), so import then export loses nothing. [`types`] knows the R4 resource types,
//! [`reference`](mod@reference) rewrites bundle-local references, [`display`] turns codes and dates into text.

pub mod display;
pub mod model;
pub mod reference;
pub mod status;
pub mod types;
pub mod validate;

pub use types::{is_r4_resource_type, is_valid_id};
