//! The broker's side of security changes: ACLs and SCRAM credentials go through the
//! controller, so every broker enforces the same ones; the Kafka API and the admin API
//! both change them here.

use crate::controller::{Applied, Command, ControllerError};
use crate::tenancy::acl::{AclBinding, AclFilter};
use crate::tenancy::quota::{QuotaEntity, QuotaType, QuotaValue};
use crate::tenancy::scram::{Credential, Mechanism};
use crate::tenancy::tenant::Tenant;
use crate::tenancy::Security;

use super::{Broker, CONTROLLER_TIMEOUT};

impl Broker {
    /// The security settings in force and the login counters.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Adds ACLs cluster-wide (validate them first: one invalid ACL refuses all).
    pub async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<(), ControllerError> {
        self.controller()
            .submit(Command::CreateAcls { acls }, CONTROLLER_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Removes the ACLs each filter selects; returns them per filter.
    pub async fn delete_acls(
        &self,
        filters: Vec<AclFilter>,
    ) -> Result<Vec<Vec<AclBinding>>, ControllerError> {
        let count = filters.len();
        match self
            .controller()
            .submit(Command::DeleteAcls { filters }, CONTROLLER_TIMEOUT)
            .await?
        {
            Applied::AclsDeleted(removed) => Ok(removed),
            _ => Ok(vec![Vec::new(); count]),
        }
    }

    /// Bytes held by the partitions of `tenant` that this broker leads (at most a second
    /// old). A partition's bytes count once, on its leader.
    pub fn tenant_stored_bytes(&self, tenant: &Tenant) -> u64 {
        self.security.stored_bytes(&tenant.name, || {
            self.topics()
                .iter()
                .filter(|t| tenant.owns(&t.meta.name))
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.check_leader(-1).is_ok())
                .map(|p| p.log().size_bytes())
                .sum()
        })
    }

    /// Sets (`Some`) and removes (`None`) client quotas cluster-wide.
    pub async fn alter_quotas(
        &self,
        changes: Vec<(QuotaEntity, QuotaType, Option<QuotaValue>)>,
    ) -> Result<(), ControllerError> {
        self.controller()
            .submit(Command::AlterQuotas { changes }, CONTROLLER_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Sets and removes SCRAM credentials cluster-wide.
    pub async fn alter_credentials(
        &self,
        upsert: Vec<(String, Mechanism, Credential)>,
        delete: Vec<(String, Mechanism)>,
    ) -> Result<(), ControllerError> {
        self.controller()
            .submit(
                Command::AlterCredentials { upsert, delete },
                CONTROLLER_TIMEOUT,
            )
            .await
            .map(|_| ())
    }
}
