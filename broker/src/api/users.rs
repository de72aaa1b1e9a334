//! AlterUserScramCredentials and DescribeUserScramCredentials: SCRAM credentials kept in
//! the metadata quorum, so `kafka-configs --entity-type users --alter --add-config
//! 'SCRAM-SHA-512=[password=...]'` works and every broker sees the same users. The client
//! sends a salted password; the broker keeps Kafka's StoredKey and ServerKey, never it.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{str, Ctx};
use crate::metadata::image::ScramCredentialMeta;
use crate::sasl::scram::{ScramCredential, ScramHash};

/// Kafka's bounds on SCRAM iterations.
const MIN_ITERATIONS: i32 = 4096;
const MAX_ITERATIONS: i32 = 16384;

/// Why a user's alteration is refused before it reaches the quorum.
fn check(user: &str, mechanism: i8, upsert: Option<(i32, &[u8], &[u8])>) -> Result<ScramHash, (ResponseError, String)> {
    if user.is_empty() {
        return Err((ResponseError::UnacceptableCredential, "Username must not be empty".into()));
    }
    let hash = ScramHash::from_id(mechanism)
        .ok_or((ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".to_string()))?;
    if let Some((iterations, salt, salted)) = upsert {
        if iterations < MIN_ITERATIONS {
            return Err((ResponseError::UnacceptableCredential, "Too few iterations".into()));
        }
        if iterations > MAX_ITERATIONS {
            return Err((ResponseError::UnacceptableCredential, "Too many iterations".into()));
        }
        if salt.is_empty() || salted.is_empty() {
            return Err((ResponseError::UnacceptableCredential, "Salt and salted password must not be empty".into()));
        }
    }
    Ok(hash)
}

pub async fn alter(ctx: &Ctx<'_>, req: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    // One answer per user; a user named twice (by any mechanism) is refused whole, as Kafka
    // does.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let del = req.deletions.iter().map(|d| d.name.to_string());
    for user in del.chain(req.upsertions.iter().map(|u| u.name.to_string())) {
        *seen.entry(user).or_default() += 1;
    }
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    for (user, _) in seen.iter().filter(|(_, n)| **n > 1) {
        errors.insert(
            user.clone(),
            (ResponseError::DuplicateResource, "A user credential cannot be altered twice in the same request".into()),
        );
    }
    let mut deletions = Vec::new();
    for d in &req.deletions {
        let user = d.name.to_string();
        if errors.contains_key(&user) {
            continue;
        }
        match check(&user, d.mechanism, None) {
            Ok(_) => deletions.push((user, d.mechanism)),
            Err(e) => {
                errors.insert(user, e);
            }
        }
    }
    let mut upsertions = Vec::new();
    for u in &req.upsertions {
        let user = u.name.to_string();
        if errors.contains_key(&user) {
            continue;
        }
        match check(&user, u.mechanism, Some((u.iterations, &u.salt, &u.salted_password))) {
            Ok(hash) => {
                let c = ScramCredential::from_salted_password(hash, u.salt.to_vec(), u.iterations, &u.salted_password);
                let meta = ScramCredentialMeta {
                    salt: c.salt,
                    iterations: c.iterations,
                    stored_key: c.stored_key,
                    server_key: c.server_key,
                };
                upsertions.push((user, u.mechanism, meta));
            }
            Err(e) => {
                errors.insert(user, e);
            }
        }
    }
    // Drop the valid items of a user another item refused: a user's change is all or nothing.
    deletions.retain(|(u, _)| !errors.contains_key(u));
    upsertions.retain(|(u, _, _)| !errors.contains_key(u));
    let order: Vec<String> =
        deletions.iter().map(|d| d.0.clone()).chain(upsertions.iter().map(|u| u.0.clone())).collect();
    if !order.is_empty() {
        match ctx.broker.metadata.alter_scram_credentials(deletions, upsertions).await {
            Ok(codes) => {
                for (user, code) in order.iter().zip(codes) {
                    if code != 0 && !errors.contains_key(user) {
                        let e = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
                        errors.insert(
                            user.clone(),
                            (e, "Attempt to delete a user credential that does not exist".into()),
                        );
                    }
                }
            }
            Err(e) => {
                for user in &order {
                    errors.entry(user.clone()).or_insert((e, String::new()));
                }
            }
        }
    }
    let results = seen
        .into_keys()
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default().with_user(str(&user));
            match errors.get(&user) {
                Some((e, msg)) => {
                    r.with_error_code(ctx.err(*e)).with_error_message((!msg.is_empty()).then(|| str(msg)))
                }
                None => r,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

pub async fn describe(ctx: &Ctx<'_>, req: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    let all = ctx.broker.metadata.read(|img| img.scram.clone());
    let info = |user: &str| -> Vec<CredentialInfo> {
        all.get(user)
            .map(|m| {
                m.iter()
                    .map(|(mech, c)| CredentialInfo::default().with_mechanism(*mech).with_iterations(c.iterations))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Kafka reads an empty list as a null one: every user (kafka-configs sends `[]`).
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => all
            .keys()
            .map(|u| DescribeUserScramCredentialsResult::default().with_user(str(u)).with_credential_infos(info(u)))
            .collect(),
        Some(users) => {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for u in &users {
                *count.entry(u.name.to_string()).or_default() += 1;
            }
            count
                .into_iter()
                .map(|(user, n)| {
                    let r = DescribeUserScramCredentialsResult::default().with_user(str(&user));
                    if n > 1 {
                        r.with_error_code(ctx.err(ResponseError::DuplicateResource)).with_error_message(Some(str(
                            "Cannot describe SCRAM credentials for the same user twice in a single request",
                        )))
                    } else if !all.contains_key(&user) {
                        r.with_error_code(ctx.err(ResponseError::ResourceNotFound)).with_error_message(Some(str(
                            &format!("Attempt to describe a user credential that does not exist: {user}"),
                        )))
                    } else {
                        r.with_credential_infos(info(&user))
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// DescribeClientQuotas: client quotas are not built, so there are none to list (and
/// AlterClientQuotas is not offered). `kafka-configs --describe --entity-type users` asks
/// for them beside the SCRAM credentials.
pub async fn describe_client_quotas(_ctx: &Ctx<'_>, _req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse::default().with_entries(Some(Vec::new()))
}
