//! Namespaces, id maps, mounts and pid 1.
