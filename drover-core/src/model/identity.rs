//! Who a command runs as: Azure's UserIdentity (an auto-user, or one of the pool's
//! userAccounts), and the pool's UserAccount.

use serde::{Deserialize, Serialize};

/// Azure's UserIdentity: `userName` (one of the pool's userAccounts) or `autoUser`; neither
/// means a non-admin auto-user of pool scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_user: Option<AutoUserSpecification>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoUserSpecification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AutoUserScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation_level: Option<ElevationLevel>,
}

/// Whether an auto-user is shared by the pool's commands or is the task's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoUserScope {
    #[serde(alias = "Task")]
    Task,
    #[serde(alias = "Pool")]
    Pool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElevationLevel {
    #[serde(alias = "nonAdmin", alias = "NonAdmin")]
    NonAdmin,
    #[serde(alias = "Admin")]
    Admin,
}

/// Azure's UserAccount on a pool. drover keeps no password: a Linux user runs without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAccount {
    pub name: String,
    /// Refused (see [`UserAccount::validate`]); never stored.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation_level: Option<ElevationLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_user_configuration: Option<LinuxUserConfiguration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxUserConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// Who a command runs as, once its identity is resolved against its pool's accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The worker's own user (admin).
    Worker,
    /// A non-admin auto-user: the pool's (shared by the pool's commands of the account), or the
    /// task's own.
    AutoUser(AutoUserScope),
    /// A non-admin account of the pool: its uid and gid when it names them.
    Account { name: String, uid: Option<u32>, gid: Option<u32> },
}

impl UserAccount {
    pub(crate) fn validate(&self) -> Result<(), String> {
        super::validate_id("name", &self.name).map_err(|e| e.to_string())?;
        if self.password.is_some() {
            return Err(format!(
                "{:?}: password: drover stores no password (a Linux user runs without one); remove it",
                self.name
            ));
        }
        if let Some(uid) = self.linux_user_configuration.as_ref().and_then(|l| l.uid) {
            if uid == 0 {
                return Err(format!("{:?}: linuxUserConfiguration.uid 0 is root; use elevationLevel admin", self.name));
            }
        }
        Ok(())
    }
}

impl UserIdentity {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.user_name.is_some() && self.auto_user.is_some() {
            return Err("userIdentity: give userName or autoUser, not both".into());
        }
        Ok(())
    }

    /// Who the command runs as among `accounts` (its pool's userAccounts).
    pub fn run_as(identity: Option<&UserIdentity>, accounts: &[UserAccount]) -> Result<RunAs, String> {
        let Some(identity) = identity else { return Ok(RunAs::AutoUser(AutoUserScope::Pool)) };
        if let Some(name) = &identity.user_name {
            let account = accounts
                .iter()
                .find(|a| a.name == *name)
                .ok_or_else(|| format!("userIdentity.userName {name:?}: the pool has no such userAccount"))?;
            if account.elevation_level == Some(ElevationLevel::Admin) {
                return Ok(RunAs::Worker);
            }
            let linux = account.linux_user_configuration.clone().unwrap_or_default();
            return Ok(RunAs::Account { name: name.clone(), uid: linux.uid, gid: linux.gid });
        }
        let auto = identity.auto_user.clone().unwrap_or_default();
        Ok(match auto.elevation_level {
            Some(ElevationLevel::Admin) => RunAs::Worker,
            _ => RunAs::AutoUser(auto.scope.unwrap_or(AutoUserScope::Pool)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_resolve_as_azure_documents_them() {
        let id = |json: &str| serde_json::from_str::<UserIdentity>(json).unwrap();
        let accounts: Vec<UserAccount> = serde_json::from_str(
            r#"[{"name":"render","linuxUserConfiguration":{"uid":4321,"gid":4321}},{"name":"ops","elevationLevel":"admin"}]"#,
        )
        .unwrap();
        assert_eq!(UserIdentity::run_as(None, &accounts), Ok(RunAs::AutoUser(AutoUserScope::Pool)));
        let task = id(r#"{"autoUser":{"scope":"task","elevationLevel":"nonadmin"}}"#);
        assert_eq!(UserIdentity::run_as(Some(&task), &accounts), Ok(RunAs::AutoUser(AutoUserScope::Task)));
        let admin = id(r#"{"autoUser":{"elevationLevel":"admin"}}"#);
        assert_eq!(UserIdentity::run_as(Some(&admin), &accounts), Ok(RunAs::Worker));
        let render = id(r#"{"userName":"render"}"#);
        assert_eq!(
            UserIdentity::run_as(Some(&render), &accounts),
            Ok(RunAs::Account { name: "render".into(), uid: Some(4321), gid: Some(4321) })
        );
        assert_eq!(UserIdentity::run_as(Some(&id(r#"{"userName":"ops"}"#)), &accounts), Ok(RunAs::Worker));
        assert!(UserIdentity::run_as(Some(&id(r#"{"userName":"x"}"#)), &accounts).is_err());
        let with_password: UserAccount = serde_json::from_str(r#"{"name":"u","password":"hunter2"}"#).unwrap();
        assert!(with_password.validate().unwrap_err().contains("stores no password"));
        assert!(!serde_json::to_string(&with_password).unwrap().contains("hunter2"));
    }
}
