//! What each documented status code and copy-log category means, in the words an
//! operator acts on (Microsoft's Import/Export log format and Data Box log articles,
//! paraphrased). Codes not listed get no meaning: the log's own code is shown as given.

/// The meaning of a drive, blob, part or copy-log code, if documented.
pub fn meaning(code: &str) -> Option<&'static str> {
    MEANINGS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map(|(_, m)| *m)
}

const MEANINGS: &[(&str, &str)] = &[
    // Drive status.
    ("Completed", "completed without errors"),
    (
        "CompletedWithWarnings",
        "completed; some blobs were renamed, skipped or overwritten per their import disposition",
    ),
    (
        "CompletedWithErrors",
        "completed with errors in one or more blobs or their parts",
    ),
    ("DiskNotFound", "no disk was found on the drive"),
    ("VolumeNotNtfs", "the first data volume is not NTFS"),
    ("DiskOperationFailed", "an operation on the disk failed"),
    (
        "BitLockerVolumeNotFound",
        "no BitLocker-encrypted volume was found",
    ),
    (
        "BitLockerNotActivated",
        "BitLocker is not enabled on the volume",
    ),
    (
        "BitLockerProtectorNotFound",
        "the volume has no numerical password protector",
    ),
    (
        "BitLockerKeyInvalid",
        "the BitLocker key given does not unlock the volume",
    ),
    (
        "BitLockerUnlockVolumeFailed",
        "the volume could not be unlocked",
    ),
    ("BitLockerFailed", "a BitLocker operation failed"),
    ("ManifestNameInvalid", "the manifest file name is invalid"),
    ("ManifestNameTooLong", "the manifest file name is too long"),
    ("ManifestNotFound", "the manifest file is not on the drive"),
    (
        "ManifestAccessDenied",
        "the manifest file could not be opened",
    ),
    ("ManifestCorrupted", "the manifest does not match its hash"),
    (
        "ManifestFormatInvalid",
        "the manifest is not in the required format",
    ),
    (
        "ManifestDriveIdMismatch",
        "the manifest names another drive",
    ),
    (
        "ReadManifestFailed",
        "the manifest could not be read (disk I/O)",
    ),
    ("BlobListFormatInvalid", "the export blob list is malformed"),
    (
        "BlobRequestForbidden",
        "the storage account refused access: check the account key or SAS",
    ),
    ("InternalError", "an internal error of the service"),
    // Blob status.
    ("FileNameInvalid", "the file name is not valid"),
    ("FileNameTooLong", "the file name is too long"),
    ("FileNotFound", "the file is not on the drive"),
    ("FileAccessDenied", "the file could not be opened"),
    ("BlobRequestFailed", "a request to the blob failed"),
    (
        "RenameFailed",
        "renaming the blob (import) or file (export) failed",
    ),
    (
        "BlobUnexpectedChange",
        "the blob changed while it was exported",
    ),
    ("LeasePresent", "the blob has a lease"),
    ("IOFailed", "a disk or network I/O error"),
    ("Failed", "failed for an unknown reason"),
    // Parts: ranges, blocks, metadata, properties, dispositions.
    ("Corrupted", "the content does not match its hash"),
    (
        "FileUnexpectedEnd",
        "the file ended before the expected length",
    ),
    (
        "BlobUnexpectedEnd",
        "the blob ended before the expected length",
    ),
    ("Uncommitted", "the block was uploaded but not committed"),
    (
        "XmlReadFailed",
        "the metadata or properties file is not in the required format",
    ),
    (
        "XmlWriteFailed",
        "writing the metadata or properties file failed",
    ),
    ("Cancelled", "not done because of an earlier failure"),
    ("Renamed", "renamed: the blob path shows the new name"),
    (
        "Skipped",
        "skipped: a blob of that name exists (no-overwrite)",
    ),
    ("Overwritten", "an existing blob was overwritten"),
    // 2018-10-01 statuses.
    ("StorageRequestFailed", "a request to storage failed"),
    (
        "StorageRequestForbidden",
        "storage refused access: check the account key, SAS or network rules",
    ),
    (
        "ManagedDiskCreationTerminalFailure",
        "the managed disk could not be created",
    ),
    (
        "InvalidPageBlobUploadAsBlockBlob",
        "a page blob was copied to a block blob share",
    ),
    (
        "InvalidAzureFileUploadAsBlockBlob",
        "Azure Files data was copied to a block blob share",
    ),
    (
        "InvalidManagedDiskUploadAsBlockBlob",
        "a managed disk was copied to a block blob share",
    ),
    (
        "InvalidManagedDiskUploadAsPageBlob",
        "a managed disk was copied to a page blob share",
    ),
    (
        "MovedToOverflowShare",
        "moved to an overflow share (the share was full)",
    ),
    (
        "MovedToDefaultAzureShare",
        "moved to the default Azure Files share",
    ),
    // Copy-log categories (2021-08-01, Data Box).
    (
        "UploadErrorWin32",
        "a file-system error while reading the file from the drive",
    ),
    (
        "UploadErrorCloudHttp",
        "Azure Storage refused the upload (the HTTP status says why)",
    ),
    (
        "UploadErrorDataValidationError",
        "the data read at upload does not match its checksum at ingestion",
    ),
    (
        "UploadErrorManagedConversionError",
        "the blob's size cannot become a managed disk (20 MiB to 8 TiB)",
    ),
    ("UploadErrorUnknownType", "an unknown upload error"),
    (
        "ContainerRenamed",
        "the container name broke Azure's rules and was renamed",
    ),
    (
        "ShareRenamed",
        "the share name broke Azure's rules and was renamed",
    ),
    (
        "BlobRenamed",
        "the blob name broke Azure's rules and was renamed",
    ),
    (
        "FileRenamed",
        "the file name broke Azure's rules and was renamed",
    ),
    (
        "DiskRenamed",
        "the disk name broke Azure's rules and was renamed",
    ),
    (
        "FileNameTrailsWithSlash",
        "the blob name ends with a slash and cannot be a file (export)",
    ),
    (
        "ExportCloudHttp",
        "Azure Storage refused a read during export",
    ),
];
