//! Who issues a command: the token's subject and role, or the system itself (the scheduler).

use crate::ids::UserId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Dealer,
    Seller,
    Doctor,
    Patient,
    Donor,
    Charity,
    Admin,
    /// Internal processes (scheduler, process managers); never granted by a token.
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Dealer => "dealer",
            Role::Seller => "seller",
            Role::Doctor => "doctor",
            Role::Patient => "patient",
            Role::Donor => "donor",
            Role::Charity => "charity",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }

    /// Roles a token may carry (CONTRACT.md, Auth).
    pub fn parse_token_role(raw: &str) -> Option<Role> {
        Some(match raw {
            "dealer" => Role::Dealer,
            "seller" => Role::Seller,
            "doctor" => Role::Doctor,
            "patient" => Role::Patient,
            "donor" => Role::Donor,
            "charity" => Role::Charity,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub sub: UserId,
    pub role: Role,
}

impl Actor {
    pub fn system(name: &str) -> Actor {
        Actor {
            // A fixed, valid literal id: cannot fail to parse.
            sub: UserId::parse(name).unwrap_or_default(),
            role: Role::System,
        }
    }
}
