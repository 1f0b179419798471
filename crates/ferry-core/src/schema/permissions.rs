//! Who may write what (docs/server-rules.md): a collection's permissions
//! and its server-only fields, judged for an [`Actor`] against a change and
//! the record it applies to. The server calls [`Schema::permit`] in its
//! push transaction, next to [`Schema::check_change`]; both clients call it
//! before they queue a write.

use serde::{Deserialize, Serialize};

use super::{CollectionSchema, Schema};
use crate::change::{Change, RecordState};
use crate::names::{Collection, FieldName, RecordId, UserId};
use crate::protocol::Role;

/// Who may create, update and delete a collection's records. An action
/// left out keeps the default: every role that writes (owner, editor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Who may create records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<Vec<Grantee>>,
    /// Who may change live records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Vec<Grantee>>,
    /// Who may delete records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Vec<Grantee>>,
}

/// One entry of an action's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    /// Owners of the space.
    Owner,
    /// Editors of the space.
    Editor,
    /// Viewers: never allowed ([`Schema::parse`] refuses it; a viewer
    /// never writes).
    Viewer,
    /// The record's author (for `create`: whoever writes, since they
    /// become it), as long as their role writes at all.
    Author,
    /// A grantee added by a later version of Ferry: it grants nothing
    /// here.
    #[serde(other)]
    Unknown,
}

/// The caller of a write, as the rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who writes (an API token's owner).
    pub user: UserId,
    /// Their role in the space now (a read-only token's is viewer).
    pub role: Role,
    /// Whether the write may set server-only fields: a REST write of an
    /// owner (by session, or by an API token that carries the right).
    pub server_fields: bool,
}

/// What a change does to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Makes a record that did not exist.
    Create,
    /// Changes a record that exists (a tombstone included).
    Update,
    /// Deletes a record.
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// The rule a forbidden write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionRule {
    /// The role may not create records of the collection.
    Create,
    /// The role may not change records of the collection.
    Update,
    /// The role may not delete records of the collection.
    Delete,
    /// Only the record's author (or the listed roles) may do it.
    Author,
    /// A field only the server writes.
    ServerOnly,
}

/// A write the rules forbid: where, which rule, and why, as a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{collection}/{id}: {message}")]
pub struct Forbidden {
    /// The record's collection.
    pub collection: Collection,
    /// The record's id.
    pub id: RecordId,
    /// The field, for a server-only field.
    pub field: Option<FieldName>,
    /// The rule.
    pub rule: PermissionRule,
    /// What is forbidden, for a person.
    pub message: String,
}

/// Whether `state` is a record that exists (live or a tombstone).
fn exists(state: &RecordState) -> bool {
    state.deleted.is_some() || !state.fields.is_empty()
}

impl Permissions {
    fn of(&self, action: Action) -> Option<&[Grantee]> {
        match action {
            Action::Create => self.create.as_deref(),
            Action::Update => self.update.as_deref(),
            Action::Delete => self.delete.as_deref(),
        }
    }
}

fn grants(list: &[Grantee], role: Role) -> bool {
    list.iter().any(|g| {
        matches!(
            (g, role),
            (Grantee::Owner, Role::Owner) | (Grantee::Editor, Role::Editor)
        )
    })
}

impl Schema {
    /// Whether `field` of `collection` is written by the server only.
    pub fn server_only(&self, collection: &Collection, field: &str) -> bool {
        self.collection(collection)
            .and_then(|c| c.fields.get(field))
            .is_some_and(|f| f.server_only)
    }

    /// Judges whether `actor` may make `change` to the record stored as
    /// `before`, whose author is `author` (`None` for a record Ferry stored
    /// before it recorded authors, or one that does not exist yet).
    /// Collections the schema does not declare have no rules here.
    pub fn permit(
        &self,
        actor: &Actor,
        before: &RecordState,
        author: Option<&UserId>,
        change: &Change,
    ) -> Result<(), Forbidden> {
        let (collection, id) = (change.collection(), change.id());
        let forbid = |field: Option<&FieldName>, rule, message: String| Forbidden {
            collection: collection.clone(),
            id: id.clone(),
            field: field.cloned(),
            rule,
            message,
        };
        let action = match change {
            Change::Delete { .. } => Action::Delete,
            Change::Upsert { .. } if exists(before) => Action::Update,
            Change::Upsert { .. } => Action::Create,
        };
        if !actor.role.can_write() {
            return Err(forbid(
                None,
                rule_of(action),
                format!("a {} of this space cannot write to it", actor.role.as_str()),
            ));
        }
        let Some(declared) = self.collection(collection) else {
            return Ok(());
        };
        check_action(declared, actor, author, action)
            .map_err(|(rule, why)| forbid(None, rule, why))?;
        if let Change::Upsert { fields, .. } = change
            && !actor.server_fields
            && let Some(name) = fields
                .keys()
                .find(|name| declared.fields.get(*name).is_some_and(|f| f.server_only))
        {
            return Err(forbid(
                Some(name),
                PermissionRule::ServerOnly,
                format!(
                    "field {name} of {collection} is written by the server only (an owner's \
                     REST write, an API token with server_fields, or the app's backend)"
                ),
            ));
        }
        Ok(())
    }
}

fn rule_of(action: Action) -> PermissionRule {
    match action {
        Action::Create => PermissionRule::Create,
        Action::Update => PermissionRule::Update,
        Action::Delete => PermissionRule::Delete,
    }
}

fn check_action(
    declared: &CollectionSchema,
    actor: &Actor,
    author: Option<&UserId>,
    action: Action,
) -> Result<(), (PermissionRule, String)> {
    let Some(list) = declared.permissions.as_ref().and_then(|p| p.of(action)) else {
        return Ok(());
    };
    if grants(list, actor.role) {
        return Ok(());
    }
    let by_author = list.contains(&Grantee::Author);
    if by_author && (action == Action::Create || author == Some(&actor.user)) {
        return Ok(());
    }
    let allowed: Vec<&str> = list
        .iter()
        .filter_map(|g| match g {
            Grantee::Owner => Some("owners"),
            Grantee::Editor => Some("editors"),
            Grantee::Author => Some("the record's author"),
            Grantee::Viewer | Grantee::Unknown => None,
        })
        .collect();
    let who = if allowed.is_empty() {
        "nobody".to_owned()
    } else {
        allowed.join(" and ")
    };
    let rule = if by_author {
        PermissionRule::Author
    } else {
        rule_of(action)
    };
    Err((
        rule,
        format!(
            "only {who} may {} these records; you are a{} {}",
            action.as_str(),
            if actor.role == Role::Owner { "n" } else { "" },
            actor.role.as_str()
        ),
    ))
}

/// Refuses lists a person could not have meant: a viewer (who never
/// writes), and (with `strict`, for a schema an app wrote) grantees this
/// version does not know.
pub(super) fn validate(permissions: &Permissions, strict: bool) -> Result<(), String> {
    for (action, list) in [
        ("create", &permissions.create),
        ("update", &permissions.update),
        ("delete", &permissions.delete),
    ] {
        for grantee in list.iter().flatten() {
            match grantee {
                Grantee::Viewer => {
                    return Err(format!(
                        "permissions.{action}: a viewer never writes; list owner, editor or author"
                    ));
                }
                Grantee::Unknown if strict => {
                    return Err(format!(
                        "permissions.{action}: owner, editor or author, got another name"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
