//! Typed tables and the two kinds of transaction a caller sees.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use redb::{ReadableTable, TableDefinition};

use crate::codec::Codec;
use crate::StoreError;

type Raw = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// `(key, value)` pairs in key order.
pub type Entries<V> = Vec<(Vec<u8>, V)>;
/// One `(key, value)` pair.
pub type Entry<V> = (Vec<u8>, V);

/// Writes of one step: `(table, key)` → new value, or `None` for a removal.
type Overlay = BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>;

pub(crate) fn definition(name: &'static str) -> Raw {
    TableDefinition::new(name)
}

/// A table whose keys are bytes and whose values are encoded by `C`.
pub struct Table<C> {
    name: &'static str,
    what: &'static str,
    _codec: PhantomData<fn() -> C>,
}

impl<C> Table<C> {
    /// A table named `name` (on disk) holding `what` records (in errors).
    pub const fn new(name: &'static str, what: &'static str) -> Self {
        Self {
            name,
            what,
            _codec: PhantomData,
        }
    }

    /// Its on-disk name (pass it to [`crate::Store::open`]).
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

fn slice_bound(b: Bound<&Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn bounds(range: &impl RangeBounds<Vec<u8>>) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        slice_bound(range.start_bound()),
        slice_bound(range.end_bound()),
    )
}

fn collect<C: Codec>(
    table: &Table<C>,
    iter: redb::Range<'_, &'static [u8], &'static [u8]>,
) -> Result<Entries<Vec<u8>>, StoreError> {
    let _ = table;
    let mut out = Vec::new();
    for kv in iter {
        let (k, v) = kv?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// A consistent snapshot for reading.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

impl ReadTxn {
    pub(crate) fn new(txn: redb::ReadTransaction) -> Self {
        Self { txn }
    }

    /// One value.
    pub fn get<C: Codec>(
        &self,
        table: &Table<C>,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<C::Value>, StoreError> {
        let t = self.txn.open_table(definition(table.name))?;
        let found = t.get(key.as_ref())?;
        found.map(|v| C::decode(table.what, v.value())).transpose()
    }

    /// Entries with keys in `range`, in key order.
    pub fn scan<C: Codec>(
        &self,
        table: &Table<C>,
        range: impl RangeBounds<Vec<u8>>,
    ) -> Result<Entries<C::Value>, StoreError> {
        let t = self.txn.open_table(definition(table.name))?;
        let raw = collect(table, t.range::<&[u8]>(bounds(&range))?)?;
        raw.into_iter()
            .map(|(k, v)| Ok((k, C::decode(table.what, &v)?)))
            .collect()
    }
}

impl ReadTxn {
    /// At most `limit` entries with keys in `range`, in key order (a bounded
    /// read where [`ReadTxn::scan`] would read the whole range).
    pub fn scan_first<C: Codec>(
        &self,
        table: &Table<C>,
        range: impl RangeBounds<Vec<u8>>,
        limit: usize,
    ) -> Result<Entries<C::Value>, StoreError> {
        let t = self.txn.open_table(definition(table.name))?;
        let mut out = Vec::new();
        for kv in t.range::<&[u8]>(bounds(&range))?.take(limit) {
            let (k, v) = kv?;
            out.push((k.value().to_vec(), C::decode(table.what, v.value())?));
        }
        Ok(out)
    }
}

/// One all-or-nothing step inside a group commit. Writes are kept in an
/// overlay that reads of this step see; they reach the transaction only when
/// the step returns `Ok`.
pub struct WriteTxn<'a> {
    txn: &'a redb::WriteTransaction,
    overlay: Overlay,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn new(txn: &'a redb::WriteTransaction) -> Self {
        Self {
            txn,
            overlay: BTreeMap::new(),
        }
    }

    fn raw_get(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.overlay.get(&(name, key.to_vec())) {
            return Ok(v.clone());
        }
        let t = self.txn.open_table(definition(name))?;
        let found = t.get(key)?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    /// One value, as this step sees it.
    pub fn get<C: Codec>(
        &self,
        table: &Table<C>,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<C::Value>, StoreError> {
        self.raw_get(table.name, key.as_ref())?
            .map(|v| C::decode(table.what, &v))
            .transpose()
    }

    /// Whether `key` is present.
    pub fn contains<C: Codec>(
        &self,
        table: &Table<C>,
        key: impl AsRef<[u8]>,
    ) -> Result<bool, StoreError> {
        Ok(self.raw_get(table.name, key.as_ref())?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn put<C: Codec>(
        &mut self,
        table: &Table<C>,
        key: impl AsRef<[u8]>,
        value: &C::Value,
    ) -> Result<(), StoreError> {
        let bytes = C::encode(value)?;
        self.overlay
            .insert((table.name, key.as_ref().to_vec()), Some(bytes));
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove<C: Codec>(
        &mut self,
        table: &Table<C>,
        key: impl AsRef<[u8]>,
    ) -> Result<bool, StoreError> {
        let present = self.raw_get(table.name, key.as_ref())?.is_some();
        self.overlay
            .insert((table.name, key.as_ref().to_vec()), None);
        Ok(present)
    }

    /// The first entry with a key in `range`, this step's writes included.
    pub fn first<C: Codec>(
        &self,
        table: &Table<C>,
        range: impl RangeBounds<Vec<u8>>,
    ) -> Result<Option<Entry<C::Value>>, StoreError> {
        let t = self.txn.open_table(definition(table.name))?;
        let mut stored = None;
        for kv in t.range::<&[u8]>(bounds(&range))? {
            let (k, v) = kv?;
            let key = k.value().to_vec();
            match self.overlay.get(&(table.name, key.clone())) {
                // Removed (or rewritten) in this step: the overlay decides.
                Some(_) => continue,
                None => {
                    stored = Some((key, v.value().to_vec()));
                    break;
                }
            }
        }
        // The overlay is ordered by (table, key): start at the range's start.
        let from = match range.start_bound() {
            Bound::Included(k) | Bound::Excluded(k) => (table.name, k.clone()),
            Bound::Unbounded => (table.name, Vec::new()),
        };
        let written = self
            .overlay
            .range(from..)
            .take_while(|((name, k), _)| {
                *name == table.name
                    && match range.end_bound() {
                        Bound::Included(end) => k <= end,
                        Bound::Excluded(end) => k < end,
                        Bound::Unbounded => true,
                    }
            })
            .filter(|((_, k), v)| range.contains(k) && v.is_some())
            .map(|((_, k), v)| (k.clone(), v.clone().unwrap_or_default()))
            .next();
        let first = match (stored, written) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        first
            .map(|(k, v)| Ok((k, C::decode(table.what, &v)?)))
            .transpose()
    }

    /// Entries with keys in `range`, in key order, this step's writes included.
    pub fn scan<C: Codec>(
        &self,
        table: &Table<C>,
        range: impl RangeBounds<Vec<u8>>,
    ) -> Result<Entries<C::Value>, StoreError> {
        let t = self.txn.open_table(definition(table.name))?;
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            collect(table, t.range::<&[u8]>(bounds(&range))?)?
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
        for ((name, k), v) in &self.overlay {
            if *name == table.name && range.contains(k) {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .map(|(k, v)| Ok((k, C::decode(table.what, &v)?)))
            .collect()
    }

    /// Moves this step's writes into the transaction.
    pub(crate) fn apply(self) -> Result<usize, StoreError> {
        let mut by_table: BTreeMap<&'static str, Entries<Option<Vec<u8>>>> = BTreeMap::new();
        let n = self.overlay.len();
        for ((name, k), v) in self.overlay {
            by_table.entry(name).or_default().push((k, v));
        }
        for (name, writes) in by_table {
            let mut t = self.txn.open_table(definition(name))?;
            for (k, v) in writes {
                match v {
                    Some(v) => {
                        t.insert(k.as_slice(), v.as_slice())?;
                    }
                    None => {
                        t.remove(k.as_slice())?;
                    }
                }
            }
        }
        Ok(n)
    }
}
