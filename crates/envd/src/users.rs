//! Accounts from `/etc/passwd` and `/etc/group`, read directly so that the static binary
//! needs no NSS.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::error::{EnvdError, Result};

/// A login account processes can run as and files can belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Supplementary groups (including the primary one).
    pub groups: Vec<u32>,
}

impl User {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// One reading of the account databases.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

impl UserDb {
    /// Reads the databases under `root` (normally `/`).
    pub fn load_from(root: &Path) -> Result<UserDb> {
        let passwd = fs::read_to_string(root.join("etc/passwd"))
            .map_err(|e| EnvdError::io("reading /etc/passwd", e))?;
        let group = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
        Ok(UserDb::parse(&passwd, &group))
    }

    pub fn load() -> Result<UserDb> {
        UserDb::load_from(Path::new("/"))
    }

    pub fn parse(passwd: &str, group: &str) -> UserDb {
        let users = passwd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 7).then_some(())?;
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 4).then_some(())?;
                Some(GroupEntry {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect();
        UserDb { users, groups }
    }

    /// The account called `name`; `unauthenticated` when there is none, as E2B's envd.
    pub fn user(&self, name: &str) -> Result<User> {
        let entry = self
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| EnvdError::Unauthenticated(format!("invalid username: '{name}'")))?;
        let mut groups = vec![entry.gid];
        groups.extend(
            self.groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name) && g.gid != entry.gid)
                .map(|g| g.gid),
        );
        Ok(User {
            name: entry.name.clone(),
            uid: entry.uid,
            gid: entry.gid,
            home: PathBuf::from(if entry.home.is_empty() {
                "/"
            } else {
                &entry.home
            }),
            groups,
        })
    }

    /// The name of `uid`, or the number as text.
    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .map(|u| u.name.clone())
            .unwrap_or_else(|| uid.to_string())
    }

    /// The name of `gid`, or the number as text.
    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .iter()
            .find(|g| g.gid == gid)
            .map(|g| g.name.clone())
            .unwrap_or_else(|| gid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# comment\nuser:x:1000:1000::/home/user:/bin/bash\nbroken line\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:user\nuser:x:1000:\n";

    #[test]
    fn parses_users_and_groups() {
        let db = UserDb::parse(PASSWD, GROUP);
        let u = db.user("user").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert_eq!(u.groups, vec![1000, 27]);
        assert!(db.user("root").unwrap().is_root());
        assert!(matches!(
            db.user("nobody"),
            Err(EnvdError::Unauthenticated(_))
        ));
        assert_eq!(db.user_name(1000), "user");
        assert_eq!(db.group_name(27), "sudo");
        assert_eq!(db.user_name(4242), "4242");
    }
}
