//! 16-bit DNP addresses. Node and group addresses live in disjoint ranges so that one can never
//! be mistaken for the other: groups take the top 4096 values (`0xF000..=0xFFFF`).

use std::fmt;

/// First address of the multicast group range.
pub const GROUP_BASE: u16 = 0xF000;

/// A unicast node address (`1..GROUP_BASE`). Zero is reserved as "unspecified".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr(u16);

/// A multicast group address (`GROUP_BASE..=0xFFFF`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupAddr(u16);

/// Any DNP address, as found in a header's destination field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    Node(NodeAddr),
    Group(GroupAddr),
    /// Zero: not a valid destination.
    Unspecified,
}

/// Why a raw 16-bit value is not the kind of address that was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrError {
    Zero,
    InGroupRange(u16),
    NotInGroupRange(u16),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::Zero => write!(f, "address 0 is reserved"),
            AddrError::InGroupRange(v) => write!(
                f,
                "address {v} (0x{v:04x}) is in the multicast group range 0x{GROUP_BASE:04x}..=0xffff"
            ),
            AddrError::NotInGroupRange(v) => write!(
                f,
                "group address {v} (0x{v:04x}) is outside the group range 0x{GROUP_BASE:04x}..=0xffff"
            ),
        }
    }
}

impl std::error::Error for AddrError {}

impl NodeAddr {
    /// A node address; `None` for 0 and for the group range.
    pub const fn new(raw: u16) -> Option<Self> {
        if raw == 0 || raw >= GROUP_BASE {
            None
        } else {
            Some(Self(raw))
        }
    }

    pub fn try_new(raw: u16) -> Result<Self, AddrError> {
        match raw {
            0 => Err(AddrError::Zero),
            r if r >= GROUP_BASE => Err(AddrError::InGroupRange(r)),
            r => Ok(Self(r)),
        }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl GroupAddr {
    /// A group address; `None` outside the group range.
    pub const fn new(raw: u16) -> Option<Self> {
        if raw >= GROUP_BASE {
            Some(Self(raw))
        } else {
            None
        }
    }

    pub fn try_new(raw: u16) -> Result<Self, AddrError> {
        Self::new(raw).ok_or(AddrError::NotInGroupRange(raw))
    }

    /// The `index`-th group (`GROUP_BASE + index`), for configs that number groups from zero.
    pub const fn from_index(index: u16) -> Option<Self> {
        if index < (u16::MAX - GROUP_BASE) + 1 {
            Some(Self(GROUP_BASE + index))
        } else {
            None
        }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl Addr {
    pub const fn from_raw(raw: u16) -> Self {
        if raw == 0 {
            Addr::Unspecified
        } else if raw >= GROUP_BASE {
            Addr::Group(GroupAddr(raw))
        } else {
            Addr::Node(NodeAddr(raw))
        }
    }

    pub const fn raw(self) -> u16 {
        match self {
            Addr::Node(n) => n.0,
            Addr::Group(g) => g.0,
            Addr::Unspecified => 0,
        }
    }
}

impl From<NodeAddr> for Addr {
    fn from(n: NodeAddr) -> Self {
        Addr::Node(n)
    }
}

impl From<GroupAddr> for Addr {
    fn from(g: GroupAddr) -> Self {
        Addr::Group(g)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for GroupAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0 - GROUP_BASE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint() {
        assert!(NodeAddr::new(0).is_none());
        assert!(NodeAddr::new(1).is_some());
        assert!(NodeAddr::new(GROUP_BASE - 1).is_some());
        assert!(NodeAddr::new(GROUP_BASE).is_none());
        assert!(GroupAddr::new(GROUP_BASE - 1).is_none());
        assert!(GroupAddr::new(0xFFFF).is_some());
        assert_eq!(GroupAddr::from_index(0).unwrap().get(), GROUP_BASE);
        assert_eq!(GroupAddr::from_index(0x0FFF).unwrap().get(), 0xFFFF);
        assert!(GroupAddr::from_index(0x1000).is_none());
        assert_eq!(Addr::from_raw(5), Addr::Node(NodeAddr(5)));
        assert_eq!(Addr::from_raw(0xF001), Addr::Group(GroupAddr(0xF001)));
        assert_eq!(Addr::from_raw(0), Addr::Unspecified);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(
            NodeAddr::try_new(0xF123)
                .unwrap_err()
                .to_string()
                .contains("group range")
        );
    }
}
