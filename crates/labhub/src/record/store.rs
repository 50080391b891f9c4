//! The store the recorder writes through: zarrs' filesystem store, with every whole-value
//! write made atomic (a temporary file, then a rename over the key), so a recorder killed
//! mid-write leaves each metadata document and chunk either as it was or as it became, never
//! truncated.

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::{
    AtomicRenameStorageTraits, Bytes, OffsetBytesIterator, StorageError, StoreKey, StorePrefix,
    WritableStorageTraits,
};

/// A [`FilesystemStore`] whose `set` replaces the value atomically.
#[derive(Debug)]
pub(crate) struct AtomicStore {
    inner: FilesystemStore,
}

impl AtomicStore {
    pub(crate) fn new(inner: FilesystemStore) -> Self {
        Self { inner }
    }

    /// The file of `key`.
    pub(crate) fn path_of(&self, key: &StoreKey) -> std::path::PathBuf {
        self.inner.key_to_fspath(key)
    }
}

impl WritableStorageTraits for AtomicStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let tmp = StoreKey::new(format!("{}.partial", key.as_str()))?;
        self.inner.set(&tmp, value)?;
        self.inner.rename(&tmp, key)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.inner.set_partial_many(key, offset_values)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        // Partial writes are not atomic: whole values only.
        false
    }
}
