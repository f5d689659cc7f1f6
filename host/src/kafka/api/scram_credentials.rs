//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM users
//! managed through the Kafka API. Clients send the salted password, never the password;
//! describing shows mechanisms and iteration counts, never keys. Reading needs DESCRIBE
//! on the cluster, changing ALTER.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{kstr, Context};
use crate::tenancy::acl::Operation;
use crate::tenancy::scram::{Credential, Mechanism, ScramError};

/// Handles DescribeUserScramCredentials.
pub fn describe(
    ctx: &Context<'_>,
    request: DescribeUserScramCredentialsRequest,
    _version: i16,
) -> DescribeUserScramCredentialsResponse {
    let mut response = DescribeUserScramCredentialsResponse::default();
    if !ctx.cluster_allowed(Operation::Describe) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        response.error_message = Some(kstr("describing credentials needs DESCRIBE on the cluster"));
        return response;
    }
    let metadata = ctx.broker.metadata();
    let names: Vec<String> = match &request.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => metadata.users.keys().cloned().collect(),
    };
    let mut seen = BTreeMap::<&str, usize>::new();
    for name in &names {
        *seen.entry(name).or_default() += 1;
    }
    response.results = names
        .iter()
        .map(|name| {
            let mut r = DescribeUserScramCredentialsResult::default();
            r.user = kstr(name.clone());
            if seen[name.as_str()] > 1 {
                r.error_code = ResponseError::DuplicateResource.code();
                r.error_message = Some(kstr(format!("user '{name}' is named more than once")));
                return r;
            }
            match metadata.users.get(name) {
                Some(creds) => {
                    r.credential_infos = creds
                        .iter()
                        .map(|(m, c)| {
                            let mut info = CredentialInfo::default();
                            info.mechanism = m.kafka_type();
                            info.iterations = c.iterations as i32;
                            info
                        })
                        .collect();
                }
                None => {
                    r.error_code = ResponseError::ResourceNotFound.code();
                    r.error_message = Some(kstr(format!("user '{name}' has no SCRAM credentials")));
                }
            }
            r
        })
        .collect();
    response
}

/// Records the first refusal of `user`'s changes.
fn fail(
    errors: &mut BTreeMap<String, (ResponseError, String)>,
    user: &str,
    error: ResponseError,
    message: String,
) {
    errors.entry(user.to_string()).or_insert((error, message));
}

/// Handles AlterUserScramCredentials.
pub async fn alter(
    ctx: &Context<'_>,
    request: AlterUserScramCredentialsRequest,
    _version: i16,
) -> AlterUserScramCredentialsResponse {
    let mut response = AlterUserScramCredentialsResponse::default();
    let users: BTreeSet<String> = request
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(request.upsertions.iter().map(|u| u.name.to_string()))
        .collect();
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    if !ctx.cluster_allowed(Operation::Alter) {
        for user in &users {
            errors.insert(
                user.clone(),
                (
                    ResponseError::ClusterAuthorizationFailed,
                    "changing credentials needs ALTER on the cluster".into(),
                ),
            );
        }
    }
    let metadata = ctx.broker.metadata();
    let mut upsert = Vec::new();
    let mut delete = Vec::new();
    let mut touched = BTreeMap::<(String, i8), usize>::new();
    for (name, mechanism) in request
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism))
        .chain(
            request
                .upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism)),
        )
    {
        *touched.entry((name, mechanism)).or_default() += 1;
    }
    for ((name, _), count) in &touched {
        if *count > 1 {
            fail(
                &mut errors,
                name,
                ResponseError::DuplicateResource,
                format!("user '{name}' has more than one change for one mechanism"),
            );
        }
    }
    for deletion in &request.deletions {
        let name = deletion.name.to_string();
        let Some(mechanism) = Mechanism::from_kafka_type(deletion.mechanism) else {
            fail(
                &mut errors,
                &name,
                ResponseError::UnsupportedSaslMechanism,
                format!("mechanism {} is unknown", deletion.mechanism),
            );
            continue;
        };
        if !metadata
            .users
            .get(&name)
            .is_some_and(|c| c.contains_key(&mechanism))
        {
            fail(
                &mut errors,
                &name,
                ResponseError::ResourceNotFound,
                format!("user '{name}' has no {mechanism} credential to delete"),
            );
            continue;
        }
        delete.push((name, mechanism));
    }
    for upsertion in &request.upsertions {
        let name = upsertion.name.to_string();
        if name.is_empty() {
            fail(
                &mut errors,
                &name,
                ResponseError::UnacceptableCredential,
                "the user name is empty".into(),
            );
            continue;
        }
        let Some(mechanism) = Mechanism::from_kafka_type(upsertion.mechanism) else {
            fail(
                &mut errors,
                &name,
                ResponseError::UnsupportedSaslMechanism,
                format!("mechanism {} is unknown", upsertion.mechanism),
            );
            continue;
        };
        let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
        match Credential::from_salted(
            mechanism,
            &upsertion.salted_password,
            upsertion.salt.to_vec(),
            iterations,
        ) {
            Ok(credential) if !upsertion.salt.is_empty() => {
                upsert.push((name, mechanism, credential))
            }
            Ok(_) => fail(
                &mut errors,
                &name,
                ResponseError::UnacceptableCredential,
                "the salt is empty".into(),
            ),
            Err(e @ ScramError::Iterations(_)) | Err(e @ ScramError::KeyLength { .. }) => fail(
                &mut errors,
                &name,
                ResponseError::UnacceptableCredential,
                e.to_string(),
            ),
            Err(e) => fail(
                &mut errors,
                &name,
                ResponseError::UnacceptableCredential,
                e.to_string(),
            ),
        }
    }
    // A user with any refused change keeps all its credentials as they were.
    upsert.retain(|(user, ..)| !errors.contains_key(user));
    delete.retain(|(user, _)| !errors.contains_key(user));
    if !upsert.is_empty() || !delete.is_empty() {
        if let Err(e) = ctx
            .broker
            .alter_credentials(upsert.clone(), delete.clone())
            .await
        {
            for (user, ..) in &upsert {
                fail(
                    &mut errors,
                    user,
                    ResponseError::RequestTimedOut,
                    e.to_string(),
                );
            }
            for (user, _) in &delete {
                fail(
                    &mut errors,
                    user,
                    ResponseError::RequestTimedOut,
                    e.to_string(),
                );
            }
        }
    }
    response.results = users
        .into_iter()
        .map(|user| {
            let mut r = AlterUserScramCredentialsResult::default();
            if let Some((error, message)) = errors.get(&user) {
                r.error_code = error.code();
                r.error_message = Some(kstr(message.clone()));
            }
            r.user = kstr(user);
            r
        })
        .collect();
    response
}
