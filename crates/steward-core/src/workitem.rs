//! Work item rules: what a valid database refresh request is, and the statuses it moves
//! through.
