//! The HTTP side of the service: routing on raw paths, bodies, responses.

pub mod body;
pub mod percent;
pub mod response;
pub mod route;

pub use body::{ChannelBody, ResponseBody};
pub use route::{Operation, Page, Route};
