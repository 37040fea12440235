//! The clocks of a job's drives: a short list in drive id order, not a map. A job has a
//! few drives, and a `BTreeMap`'s first node costs over a kilobyte whatever it holds:
//! 12 MiB over 10,000 jobs (tests/benches/scale_10k.rs). Written as a JSON object, as the
//! map was, so `jobs.clocks` reads the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DriveClock;

/// Per drive id, its clocks; sorted by id, each id once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriveClocks(Vec<(String, DriveClock)>);

impl DriveClocks {
    fn find(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(have, _)| have.as_str().cmp(id))
    }

    /// The clocks of drive `id`.
    pub fn get(&self, id: &str) -> Option<&DriveClock> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    /// The clocks of drive `id`, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut DriveClock> {
        self.find(id).ok().map(|i| &mut self.0[i].1)
    }

    /// Sets the clocks of drive `id`. The list grows by one, not to four: it is kept
    /// for as long as the job is watched (120 bytes a drive, scale_10k).
    pub fn insert(&mut self, id: String, clock: DriveClock) {
        match self.find(&id) {
            Ok(i) => self.0[i].1 = clock,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (id, clock));
            }
        }
    }

    /// Keeps the drives for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(id, _)| keep(id));
    }

    /// The drive ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(id, _)| id.as_str())
    }

    /// Every drive's clocks, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut DriveClock> {
        self.0.iter_mut().map(|(_, clock)| clock)
    }

    /// True when no drive has clocks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, DriveClock)> for DriveClocks {
    fn from_iter<I: IntoIterator<Item = (String, DriveClock)>>(drives: I) -> Self {
        let mut clocks = DriveClocks::default();
        for (id, clock) in drives {
            clocks.insert(id, clock);
        }
        clocks
    }
}

impl Serialize for DriveClocks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(id, clock)| (id, clock)))
    }
}

impl<'de> Deserialize<'de> for DriveClocks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, DriveClock>::deserialize(deserializer)?;
        Ok(DriveClocks(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `jobs.clocks` written before (a JSON object by drive id) reads the same and is
    /// written back the same; ids stay sorted and unique whatever the order of insertion.
    #[test]
    fn drive_clocks_read_and_write_as_the_map_did() {
        let stored = r#"{"B":{"percent":20,"since":1800000000,"stalled":false},"A":{"since":1800000060,"stalled":true}}"#;
        let clocks: DriveClocks = serde_json::from_str(stored).unwrap();
        assert_eq!(clocks.ids().collect::<Vec<_>>(), ["A", "B"]);
        let map: BTreeMap<String, DriveClock> = serde_json::from_str(stored).unwrap();
        assert_eq!(
            serde_json::to_string(&clocks).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let mut built: DriveClocks = [("C", 1), ("A", 2), ("C", 3)]
            .into_iter()
            .map(|(id, p)| {
                let clock = DriveClock {
                    percent: Some(p),
                    ..DriveClock::default()
                };
                (id.to_owned(), clock)
            })
            .collect();
        assert_eq!(built.ids().collect::<Vec<_>>(), ["A", "C"]);
        // Kept for the life of the watch: no room held beyond the drives it has.
        assert_eq!(built.0.capacity(), 2);
        assert_eq!(built.get("C").and_then(|c| c.percent), Some(3));
        built.retain(|id| id != "A");
        assert_eq!(built.ids().collect::<Vec<_>>(), ["C"]);
    }
}
