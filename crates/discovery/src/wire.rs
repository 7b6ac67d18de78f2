//! Documents of the registry API shared by its server and its clients.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::registry::Instance;

/// The ready instances of a service at a registry index.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceInstances {
    /// The registry's change counter when this answer was made.
    pub index: u64,
    /// The ready instances, by id.
    pub instances: Vec<Instance>,
}
