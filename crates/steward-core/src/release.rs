//! Release catalog (owned by the catalog helper).
