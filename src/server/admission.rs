//! Which new connections are admitted: at most `per_ip` open connections from one peer address
//! and `total` in all, so that one client cannot take every file descriptor (issue 17,
//! slowloris). A [`Slot`] holds a connection's place until it is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer already holds `per_ip` connections.
    PerAddress,
    /// The server holds `total` connections.
    Total,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// The open-connection counts, shared by the accept loop and the connections' slots.
#[derive(Clone)]
pub struct Admission {
    /// 0: no per-address limit.
    per_ip: usize,
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub fn new(per_ip: usize, total: usize) -> Admission {
        Admission {
            per_ip,
            total,
            counts: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        // The lock is never held across an await or a panic-prone call; a poisoned lock still
        // holds consistent counts.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.total {
            return Err(Refusal::Total);
        }
        let mine = counts.by_ip.entry(ip).or_default();
        if self.per_ip != 0 && *mine >= self.per_ip {
            return Err(Refusal::PerAddress);
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

/// One admitted connection's place; dropping it frees the place.
pub struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Addresses seen once must not grow the map for ever.
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn each_address_gets_its_own_allowance() {
        let admission = Admission::new(2, 10);
        let a1 = admission.admit(A).unwrap();
        let _a2 = admission.admit(A).unwrap();
        assert_eq!(admission.admit(A).err(), Some(Refusal::PerAddress));
        let _b1 = admission.admit(B).unwrap();
        drop(a1);
        assert!(admission.admit(A).is_ok());
    }

    #[test]
    fn the_total_is_a_cap_over_all_addresses() {
        let admission = Admission::new(0, 2);
        let _a = admission.admit(A).unwrap();
        let b = admission.admit(B).unwrap();
        assert_eq!(admission.admit(A).err(), Some(Refusal::Total));
        drop(b);
        assert_eq!(admission.open(), 1);
        assert!(admission.admit(B).is_ok());
    }

    #[test]
    fn closed_addresses_leave_no_entry() {
        let admission = Admission::new(5, 5);
        drop(admission.admit(A).unwrap());
        assert!(admission.counts.lock().unwrap().by_ip.is_empty());
        assert_eq!(admission.open(), 0);
    }
}
