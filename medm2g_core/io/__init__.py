"""Medical image I/O: the Volume type, DICOM and NIfTI readers and writers, previews, atomic writes."""
